"""Where each capture's report lives under the output directory, and the one place that writes it.

A report directory is named after the capture's path relative to its scan root (readable) plus a digest of its
catalog key (unique: two captures never share a directory even when their relative paths sanitise alike or come
from different roots). The name is built from `[A-Za-z0-9._-]` only, so it cannot climb out of the output
directory; `write_capture_report` also refuses a directory that resolves elsewhere (a symlink planted there).

`write_capture_report` is the single call site of the HTML report writer; `report_link` prefers the report's
`index.html` and falls back to `findings.json`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from pcapsense.engine import AnalysisResult
from pcapsense.errors import PcapsenseError
from pcapsense.report import write_report
from pcapsense.report.outdir import safe_name
from pcapsense.report.pages import PLOTLY_JS

HTML_REPORT, JSON_REPORT = "index.html", "findings.json"
REPORT_FILES = (HTML_REPORT, JSON_REPORT)  # what a capture's link points at, preferred first
SLUG_CHARS = 80
DIGEST_CHARS = 12


def report_name(rel: str, key: str) -> str:
    """The report directory name of a capture: sanitised relative path, then a digest of its unique key."""
    slug = safe_name(rel.replace(os.sep, "__"), "").strip("-")[:SLUG_CHARS] or "capture"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:DIGEST_CHARS]}"


def report_link(out_dir: Path, name: str) -> str | None:
    """The report file to link to (relative to `out_dir`), or None when the capture has none there."""
    return next((f"{name}/{file}" for file in REPORT_FILES if (out_dir / name / file).is_file()), None)


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename: a scan killed mid-write leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_capture_report(result: AnalysisResult, out_dir: Path, name: str, capture_path: str,
                         max_decompressed: int) -> None:
    """Write one capture's HTML report (with findings.json and findings.csv) into `out_dir/name`.

    The reports of a scan share the one plotly.min.js the fleet index writes beside them."""
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    if target.resolve().parent != out_dir.resolve():
        raise PcapsenseError(f"{target}: resolves outside the output directory {out_dir}; not writing there")
    write_report(result, target, capture_path=capture_path, force=True, max_decompressed=max_decompressed,
                 shared_plotly=f"../{PLOTLY_JS}")
