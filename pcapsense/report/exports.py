"""findings.json and findings.csv: the findings for tools and spreadsheets.

findings.json is the same schema-1 document `--format json` prints, so one parser reads both. findings.csv has
one row per finding; a cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR)
is prefixed with a quote (OWASP "CSV injection"), since summaries and filters can quote packet data.
"""

from __future__ import annotations

import csv
import io

from pcapsense.engine import AnalysisResult
from pcapsense.output.jsondoc import dumps
from pcapsense.report.evidence import EvidenceFile
from pcapsense.report.facts import utc

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_FRAMES = 200
CSV_FLOWS = 50
COLUMNS = ("number", "detector", "layer", "severity", "title", "summary", "owner", "remedy", "filter",
           "frame_count", "frames", "flows", "hosts", "window_start", "window_end", "caveats", "evidence_file")


def findings_json(result: AnalysisResult) -> str:
    return dumps(result.to_dict()) + "\n"


def findings_csv(result: AnalysisResult, evidence: list[EvidenceFile] | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for n, f in enumerate(result.findings, start=1):
        ev = f.evidence
        frames = sorted(set(ev.frames))
        window = ev.window or (None, None)
        writer.writerow(_cell(v) for v in (
            n, f.detector, f.layer, str(f.severity), f.title, f.summary, f.owner, f.remedy, f.filter, len(frames),
            " ".join(map(str, frames[:CSV_FRAMES])), " | ".join(map(str, ev.flows[:CSV_FLOWS])), " ".join(ev.hosts),
            utc(window[0]) if window[0] is not None else "", utc(window[1]) if window[1] is not None else "",
            " | ".join(f.caveats), (evidence[n - 1].path or "") if evidence else ""))
    return out.getvalue()


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
