"""The `scan` and `findings` commands (attached to the main `pcapsense` group, and runnable on their own as
`python -m pcapsense.scan`).

`scan` exit codes: 0 every capture of the scan is analysed (ok or partial), 1 the scan completed but some
capture is recorded failed, 2 usage error or the scan could not run (no such path, unusable catalog, scheduler
unreachable, broken detector plugin), 130 interrupted (what was committed stays; the same command resumes).
`findings` exits 0, or 2 on a usage error or a missing catalog.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pcapsense import __version__
from pcapsense.detector import load_detectors
from pcapsense.errors import PcapsenseError
from pcapsense.findings import LAYERS, Severity
from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED
from pcapsense.scan.catalog import FAILED, OK, PARTIAL, UNCHANGED, Catalog, FindingQuery, analyzer_version, iso_utc

if TYPE_CHECKING:
    from pcapsense.scan.batch import ScanConfig

EXIT_OK, EXIT_FAILED_CAPTURES, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CATALOG = Path("reports/catalog.sqlite")
DEFAULT_OUT = Path("reports")
SEVERITIES = [str(s) for s in Severity]
MIB = 2**20
REDRAW_S = 0.2
BAR_CHARS = 24
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run these cells as formulas (OWASP)


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(EXIT_UNUSABLE)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class _Progress:
    """Captures done/total, bytes, rate and ETA on one stderr line, redrawn at most every REDRAW_S seconds.

    The ETA is from bytes, not captures: one large capture costs as much as many small ones.
    """

    def __init__(self, captures: int, nbytes: int, shown: bool) -> None:
        self.total, self.total_bytes, self.shown = captures, nbytes, shown
        self.done = self.bytes = 0
        self.started = time.monotonic()
        self.drawn = 0.0

    def advance(self, nbytes: int) -> None:
        self.done += 1
        self.bytes += nbytes
        now = time.monotonic()
        if not self.shown or (now - self.drawn < REDRAW_S and self.done < self.total):
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-9)
        byte_rate = self.bytes / elapsed
        eta = _clock((self.total_bytes - self.bytes) / byte_rate) if byte_rate else "?"
        filled = BAR_CHARS * self.done // max(self.total, 1)
        click.echo(f"\r[{'#' * filled}{'.' * (BAR_CHARS - filled)}] {self.done}/{self.total} captures  "
                   f"{self.bytes / MIB:,.1f}/{self.total_bytes / MIB:,.1f} MiB  {self.done / elapsed:,.1f} captures/s  "
                   f"{byte_rate / MIB:,.1f} MiB/s  ETA {eta} ", err=True, nl=False)

    def finish(self) -> None:
        if self.shown and self.done:
            click.echo("", err=True)


def _where(config: ScanConfig) -> str:
    if config.scheduler:
        return f"on the Dask cluster at {config.scheduler}"
    return "in-process" if config.workers == 1 else f"on {config.workers} local worker processes"


@click.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="CPU count",
              help="Worker processes of the local Dask cluster; 1 analyses in-process without Dask.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Use an existing Dask cluster (e.g. tcp://host:8786) instead; its workers must see the same "
                   "paths (captures and -o DIR).")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CATALOG,
              show_default=True, help="SQLite catalog to record into and resume from.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Directory for per-capture reports and the fleet index (index.html).")
@click.option("--rescan", is_flag=True, help="Analyse every capture again, even those unchanged since the catalog.")
@click.option("--max-decompressed", type=click.IntRange(min=1), default=DEFAULT_MAX_DECOMPRESSED, show_default=True,
              help="Cap on bytes decompressed from one .gz/.bz2/.xz capture.")
def scan(paths: tuple[str, ...], workers: int, scheduler: str | None, catalog_path: Path, out_dir: Path,
         rescan: bool, max_decompressed: int) -> None:
    """Analyse every capture under PATHS (recognised by magic, directories walked) in parallel into a catalog."""
    from pcapsense.scan import batch  # Dask and plotly load only when scanning: other commands stay quick to start

    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        _fail(f"{missing[0]}: no such file or directory")
    config = batch.ScanConfig(paths, out_dir, workers, scheduler, rescan, max_decompressed)
    try:
        version = analyzer_version(__version__, load_detectors())
        with Catalog(catalog_path, create=True) as catalog:
            plan = batch.prepare(config, catalog, version)
            found = plan.discovery
            click.echo(f"{len(found.captures)} captures found, {plan.skipped} unchanged since the catalog, "
                       f"{len(plan.tasks)} to analyse {_where(config)}; {len(found.refused)} refused, "
                       f"{found.ignored} other files ignored", err=True)
            progress = _Progress(len(plan.tasks), sum(plan.sizes.values()), sys.stderr.isatty())
            try:
                stats = batch.run(config, catalog, plan, version, progress.advance)
            finally:
                progress.finish()
            index, statuses = batch.index(config, catalog, plan)
    except KeyboardInterrupt:
        click.echo("interrupted: every capture finished so far is in the catalog; run the same command again to "
                   "resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (PcapsenseError, OSError) as exc:
        _fail(str(exc))
    except sqlite3.Error as exc:  # e.g. the disk filled up: every capture committed before it is kept
        _fail(f"{catalog_path}: {exc}")
    analysed = sum(stats.statuses[s] for s in (OK, PARTIAL, FAILED))
    rate = f" ({analysed / stats.elapsed_s:,.1f} captures/s)" if analysed and stats.elapsed_s else ""
    click.echo(f"{sum(statuses.values())} entries: {statuses[OK]} ok, {statuses[PARTIAL]} partial, "
               f"{statuses[FAILED]} failed. This run analysed {analysed} in {stats.elapsed_s:.1f} s{rate}, "
               f"{plan.skipped + stats.statuses[UNCHANGED]} unchanged.")
    click.echo(f"catalog: {catalog_path}\nindex: {index}")
    sys.exit(EXIT_FAILED_CAPTURES if statuses[FAILED] else EXIT_OK)


def _since(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
    """ISO 8601 (UTC unless it says otherwise) or epoch seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor epoch seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# One exported finding: flat and self-contained (the capture's path and hash), times in ISO 8601 UTC.
EXPORT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "time": lambda row: iso_utc(row["window_start"]),
    "time_end": lambda row: iso_utc(row["window_end"]),
    **{name: itemgetter(name) for name in ("severity", "layer", "detector", "title", "summary")},
    "capture": itemgetter("path"),
    "capture_sha256": itemgetter("sha256"),
    **{name: itemgetter(name) for name in ("hosts", "evidence")},
    "filter": itemgetter("display_filter"),
    **{name: itemgetter(name) for name in ("remedy", "owner", "caveats", "analyzer_version", "analyzed_at")},
}


def _export(row: dict[str, Any]) -> dict[str, Any]:
    return {name: get(row) for name, get in EXPORT.items()}


def _write_jsonl(records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        click.echo(json.dumps(record, ensure_ascii=False))


def _csv_cell(value: Any) -> str:
    """Lists and objects as JSON; text that a spreadsheet would evaluate is prefixed with a quote."""
    text = value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def _write_csv(records: Iterable[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(EXPORT)
    writer.writerows([_csv_cell(v) for v in record.values()] for record in records)


TABLE_COLUMNS = ("time", "severity", "layer", "detector", "title", "capture")


def _write_table(records: Iterable[dict[str, Any]]) -> None:
    rows = [TABLE_COLUMNS, *([r[c] or "" for c in TABLE_COLUMNS] for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS) - 1)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))


WRITERS: dict[str, Callable[[Iterable[dict[str, Any]]], None]] = {
    "table": _write_table, "jsonl": _write_jsonl, "csv": _write_csv,
}


@click.command("findings")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CATALOG,
              show_default=True)
@click.option("--detector", "detectors", multiple=True, metavar="ID", help="Only this detector (repeatable).")
@click.option("--layer", "layers", multiple=True, type=click.Choice(LAYERS, case_sensitive=False),
              help="Only this layer (repeatable).")
@click.option("--severity", type=click.Choice(SEVERITIES), help="Only findings at or above this severity.")
@click.option("--since", callback=_since, metavar="TIME",
              help="Only findings whose time window (else the capture's span) ends at or after TIME: ISO 8601 "
                   "(UTC unless a zone is given) or epoch seconds.")
@click.option("--format", "fmt", type=click.Choice(list(WRITERS)), default="table", show_default=True,
              help="table for people, jsonl for SIEM ingestion (one JSON object per line), csv for spreadsheets.")
def findings(catalog_path: Path, detectors: tuple[str, ...], layers: tuple[str, ...], severity: str | None,
             since: float | None, fmt: str) -> None:
    """Query and export findings across the whole catalog, in time order."""
    at_or_above = tuple(str(s) for s in Severity if s >= Severity.parse(severity)) if severity else ()
    query = FindingQuery(detectors, layers, at_or_above, since)
    try:
        with Catalog(catalog_path, create=False) as catalog:
            WRITERS[fmt](map(_export, catalog.findings(query)))
    except PcapsenseError as exc:
        _fail(str(exc))
