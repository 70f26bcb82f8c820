"""The HTML report: `reports/<capture-name>/` with the triage ladder, one page per rung, and the findings as data.

Layout of a report directory:

* `index.html`: the ladder (each rung clean / suspect / broken / not observed), the narrated sentence, the
  findings by layer and the capture facts;
* `L2.html`, `L3.html`, `L4.html`, `DNS.html`, `TLS.html`, `L7.html`: each layer's health figures (a clean layer
  still shows them: clean is a result) and its findings in full, with Wireshark filters and tshark's view;
* `findings.json` (the `--format json` document) and `findings.csv`;
* `evidence/<detector-id>-<n>.pcap` with `--extract-evidence`;
* `plotly.min.js`, `report.css`, `report.js`: everything the pages load, so the report works offline.

Modules, one job each: `safety` (the escaping helper), `outdir` (confined file writing), `charts`, `facts`,
`pages`, `exports`, `evidence` (extraction pass) and `wireshark` (tshark drill-down).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from plotly.offline import get_plotlyjs

from pcapsense.engine import AnalysisResult
from pcapsense.findings import LAYERS
from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED
from pcapsense.report import exports, pages
from pcapsense.report.charts import charts_for
from pcapsense.report.evidence import extract
from pcapsense.report.outdir import OutputDir, ReportExistsError, UnsafePathError, capture_stem, check_report_dir
from pcapsense.report.wireshark import dissect

REPORTS_ROOT = Path("reports")
ASSETS = ("report.css", "report.js")

__all__ = ["ReportExistsError", "UnsafePathError", "check_report_dir", "default_report_dir", "write_report"]


def default_report_dir(capture_path: str | None) -> Path:
    """`reports/<capture-name>`: the capture's file name without capture/compression suffixes; stdin is `stdin`."""
    return REPORTS_ROOT / capture_stem(capture_path)


def write_report(result: AnalysisResult, out_dir: Path, *, capture_path: str | None, force: bool = False,
                 extract_evidence: bool = False, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
                 shared_plotly: str | None = None) -> Path:
    """Write the report into `out_dir` and return its resolved path.

    Refuses (ReportExistsError) when `out_dir` exists and is not empty unless `force`; with `force` it
    overwrites its own files and leaves any others alone. `capture_path` is what was analysed ("-" or None for
    stdin): evidence extraction (under the same decompression cap as the analysis) and tshark's dissection read
    it again. `shared_plotly` is a relative URL of a plotly.min.js that a fleet of reports shares (a scan writes
    one copy beside its index instead of 4.6 MB per capture); without it the report bundles its own.
    """
    out = OutputDir(out_dir, force=force)
    series = result.series
    evidence = (extract(result.findings, result.capture, capture_path, out, max_decompressed)
                if extract_evidence else None)
    dissection = dissect(result.findings, capture_path, result.capture.get("compression"))
    if shared_plotly is None:
        out.write(pages.PLOTLY_JS, get_plotlyjs())
    plotly_src = shared_plotly or pages.PLOTLY_JS
    assets = files("pcapsense.report")
    for name in ASSETS:
        out.write(name, assets.joinpath(name).read_bytes())
    out.write(pages.PAGE["index"], pages.index_page(result, charts_for("index", series, result.findings),
                                                    plotly_src))
    for layer in LAYERS:
        charts = charts_for(layer, series, result.findings)
        out.write(pages.PAGE[layer], pages.layer_page(layer, result, series, charts, evidence, dissection,
                                                      plotly_src))
    out.write("findings.json", exports.findings_json(result))
    out.write("findings.csv", exports.findings_csv(result, evidence))
    return out.root
