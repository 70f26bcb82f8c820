"""Command line: `pcapsense analyze`, `pcapsense detectors`.

Exit codes: 0 ok (also for a partial analysis, which says so), 1 when `--fail-on` tripped, 2 for unusable input
or a usage error. Errors are one line naming the file, never a traceback.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pcapsense import __version__, readahead
from pcapsense.detector import UsageError, describe_thresholds, load_detectors, parse_overrides
from pcapsense.errors import PcapsenseError
from pcapsense.findings import Severity
from pcapsense.flowlimits import FlowLimits
from pcapsense.output import terminal
from pcapsense.output.jsondoc import dumps
from pcapsense.scan.cli import findings as findings_cmd
from pcapsense.scan.cli import scan as scan_cmd

if TYPE_CHECKING:
    from pcapsense.engine import AnalysisOptions, AnalysisResult

EXIT_OK, EXIT_FAIL_ON, EXIT_INPUT = 0, 1, 2
# Objects allocated between young-generation collections (CPython's default: 700). An analysis allocates few
# objects but many short-lived reference cycles (pandas frames); at the default the collector ran ~290 times on
# the 2M-packet benchmark and took 0.12 s of the engine's CPU, at 50,000 about 0.03 s, peak memory unchanged.
GC_YOUNG_OBJECTS = 50_000
SEVERITIES = [str(s) for s in Severity]


class _Progress:
    """A one-line progress display on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int | None) -> None:
        self.total = total

    def __call__(self, consumed: int, packets: int, elapsed: float) -> None:
        rate = packets / elapsed if elapsed > 0 else 0.0
        share = f" {100 * consumed / self.total:5.1f}%" if self.total else ""
        click.echo(f"\r{consumed / 2**20:10.1f} MiB{share}  {packets} packets  {rate:,.0f} packets/s",
                   err=True, nl=False)

    def done(self) -> None:
        click.echo("", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pcapsense")
def main() -> None:
    """pcapsense: a packet-capture forensic analyzer that says which layer broke."""


def _size_of(path: str) -> int | None:
    import os

    try:
        return os.stat(path).st_size if path != "-" else None
    except OSError:
        return None


@main.command("analyze")
@click.argument("captures", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: summary grouped by layer; json: one JSON document on stdout.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default=None,
              help="Exit 1 when a finding at or above this severity exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no text summary.")
@click.option("--set", "settings", multiple=True, metavar="DETECTOR.FIELD=VALUE",
              help="Override a detector threshold (repeatable), e.g. syn-flood.min_half_open=500.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report (pure JSON/terminal runs).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default reports/<capture-name>; with several captures, one subdirectory each).")
@click.option("--force", is_flag=True, help="Overwrite an existing report directory.")
@click.option("--extract-evidence", is_flag=True,
              help="Write evidence/<detector>-<n>.pcap holding each finding's frames.")
@click.option("--max-flows", type=click.IntRange(min=1000), default=FlowLimits.max_flows, show_default=True,
              help="Hard cap on tracked flows; beyond it flows are evicted (half-open first) and counted.")
@click.option("--max-decompressed", type=click.IntRange(min=1), default=64 * 2**30, show_default=True,
              help="Cap on bytes decompressed from a .gz/.bz2/.xz capture.")
def analyze_cmd(captures: tuple[str, ...], fmt: str, fail_on: str | None, quiet: bool, settings: tuple[str, ...],
                no_report: bool, output: Path | None, force: bool, extract_evidence: bool, max_flows: int,
                max_decompressed: int) -> None:
    """Analyse one or more captures (pcap/pcapng, optionally compressed; `-` reads stdin) and write a report."""
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
    early = readahead.start(captures[0])  # a large file: its read-ahead child works while the engine loads
    try:
        _analyze_all(captures, early, fmt=fmt, fail_on=fail_on, quiet=quiet, settings=settings, no_report=no_report,
                     output=output, force=force, extract_evidence=extract_evidence, max_flows=max_flows,
                     max_decompressed=max_decompressed)
    finally:
        if early is not None:
            early.close()


def _analyze_all(captures: tuple[str, ...], early: readahead.Started | None, *, fmt: str, fail_on: str | None,
                 quiet: bool, settings: tuple[str, ...], no_report: bool, output: Path | None, force: bool,
                 extract_evidence: bool, max_flows: int, max_decompressed: int) -> NoReturn:
    from pcapsense.engine import AnalysisOptions  # pandas loads here, after readahead.start

    try:
        registry = load_detectors()
        overrides = parse_overrides(settings, registry)
    except UsageError as exc:
        click.echo(f"pcapsense: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    options = AnalysisOptions(overrides=overrides, limits=FlowLimits(max_flows=max_flows),
                              max_decompressed=max_decompressed, series=not no_report)
    results: list[AnalysisResult] = []
    failed = False
    for i, path in enumerate(captures):
        out_dir = None if no_report else _report_dir(path, output, len(captures))
        try:
            if out_dir is not None:
                _report().check_report_dir(out_dir, force=force)  # refuse before a long analysis, not after it
            result = _analyze_one(path, options, quiet, early if i == 0 else None)
            if result is not None and out_dir is not None:
                written = _report().write_report(result, out_dir, capture_path=path, force=force,
                                       extract_evidence=extract_evidence, max_decompressed=max_decompressed)
                if not quiet:
                    click.echo(f"report: {written / 'index.html'}", err=True)
        except PcapsenseError as exc:
            click.echo(str(exc), err=True)
            result = None
        if result is None:
            failed = True
            continue
        results.append(result)
        if fmt == "text" and not quiet:
            terminal.render(result, click.echo)
    if fmt == "json":
        docs: Any = [r.to_dict() for r in results]
        click.echo(dumps(docs[0] if len(captures) == 1 and docs else docs))
    if failed:
        sys.exit(EXIT_INPUT)
    if fail_on is not None:
        bar = Severity.parse(fail_on)
        if any(f.severity >= bar for r in results for f in r.findings):
            sys.exit(EXIT_FAIL_ON)
    sys.exit(EXIT_OK)


def _report() -> ModuleType:
    """The report package pulls in plotly (tens of MB, ~0.1 s): imported only when a report is written."""
    from pcapsense import report

    return report


def _report_dir(path: str, output: Path | None, count: int) -> Path:
    if output is None:
        return _report().default_report_dir(path)
    return output / _report().default_report_dir(path).name if count > 1 else output


def _analyze_one(path: str, options: AnalysisOptions, quiet: bool,
                 early: readahead.Started | None) -> AnalysisResult | None:
    from pcapsense.engine import analyze

    progress = _Progress(_size_of(path)) if (not quiet and sys.stderr.isatty()) else None
    try:
        result = analyze(path, options, progress, early)
    except PcapsenseError as exc:
        if progress:
            progress.done()
        click.echo(str(exc), err=True)
        return None
    except KeyboardInterrupt:
        click.echo(f"{path}: interrupted", err=True)
        sys.exit(130)
    if progress:
        progress.done()
    fault = result.capture["fault"]
    if fault:
        click.echo(f"{result.capture['path']}: record #{fault['record']} at byte offset {fault['offset']}: "
                   f"{fault['message']} (partial analysis: results cover the records before it)", err=True)
    return result


@main.command("detectors")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def detectors_cmd(fmt: str) -> None:
    """List every installed detector with its layer and thresholds (defaults and their sources)."""
    registry = load_detectors()
    if fmt == "json":
        click.echo(json.dumps([{
            "id": cls.id, "layer": cls.layer, "title": cls.title,
            "thresholds": [{"name": n, "default": d, "source": s, "doc": doc}
                           for n, d, s, doc in describe_thresholds(cls)],
        } for cls in registry.values()], indent=2))
        return
    for cls in registry.values():
        click.echo(f"{cls.id}  [{cls.layer}]  {cls.title}")
        for name, default, source, doc in describe_thresholds(cls):
            click.echo(f"    {name} = {default!r}  ({source})")
            if doc:
                click.echo(f"        {doc}")


main.add_command(scan_cmd)
main.add_command(findings_cmd)
