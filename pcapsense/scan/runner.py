"""Analyse one capture as a task, and choose where the tasks run: in-process, or on Dask (see `cluster`).

Workers read captures and write report files; they hand back plain `Outcome` dicts and never touch the catalog,
which only the client writes. Inside a worker, any exception from an analysis becomes a failed outcome with a
one-line reason (a `PcapsenseError` as is, anything else as `Type: message`), so one bad capture never stops the
batch.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcapsense import __version__
from pcapsense.detector import Detector, load_detectors
from pcapsense.engine import AnalysisOptions, AnalysisResult, analyze
from pcapsense.errors import NotACaptureError, PcapsenseError
from pcapsense.scan.catalog import FAILED, OK, PARTIAL, UNCHANGED, Outcome, analyzer_version, new_outcome, one_line
from pcapsense.scan.reports import write_capture_report

HASH_CHUNK = 1 << 20

Executor = Callable[[list["Task"]], Iterator[Outcome]]


@dataclass(frozen=True)
class Task:
    """One capture to analyse: plain data, pickled to a worker."""

    path: str  # what to open
    key: str  # the catalog key
    report: str  # report directory name inside out_dir
    out_dir: str
    known_sha256: str | None  # content hash whose catalogued analysis still stands, if any
    max_decompressed: int


@functools.cache
def detectors() -> dict[str, type[Detector]]:
    """Read the entry points once per worker process rather than once per capture."""
    return load_detectors()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _analysed(result: AnalysisResult) -> dict[str, Any]:
    """The outcome facts of a finished analysis (a partial one names where reading stopped)."""
    cap = result.capture
    fault = cap["fault"]
    span = cap["last_ts"] - cap["first_ts"] if cap["first_ts"] is not None and cap["last_ts"] is not None else None
    return {
        "error": fault and one_line(f"{cap['path']}: record #{fault['record']} at byte offset {fault['offset']}: "
                                    f"{fault['message']}"),
        "packets": cap["packets"], "duration_s": span, "first_ts": cap["first_ts"], "last_ts": cap["last_ts"],
        "elapsed_s": result.stats.get("elapsed_s"), "findings": [f.to_dict() for f in result.findings],
    }


def analyze_task(task: Task) -> Outcome:
    """Analyse one capture in a worker: hash it, analyse it unless the hash shows the catalogued result stands,
    write its report, and describe what happened as plain data. Never raises for a bad capture."""
    version = analyzer_version(__version__, detectors())
    facts: dict[str, Any] = {}
    try:
        st = os.stat(task.path)
        facts.update(size=st.st_size, mtime=st.st_mtime)
        if not stat.S_ISREG(st.st_mode):  # replaced since discovery; a FIFO would block the hash forever
            raise NotACaptureError(f"{task.path}: not a regular file")
        facts["sha256"] = file_sha256(task.path)
        if facts["sha256"] == task.known_sha256:
            return new_outcome(task.key, UNCHANGED, version, **facts)
        result = analyze(task.path, AnalysisOptions(max_decompressed=task.max_decompressed, registry=detectors()))
        write_capture_report(result, Path(task.out_dir), task.report, task.path, task.max_decompressed)
    except PcapsenseError as exc:
        return new_outcome(task.key, FAILED, version, error=one_line(str(exc)), **facts)
    except Exception as exc:
        return new_outcome(task.key, FAILED, version, error=one_line(f"{type(exc).__name__}: {exc}"), **facts)
    return new_outcome(task.key, PARTIAL if result.capture["partial"] else OK, version, **facts, **_analysed(result))


def run_in_process(tasks: list[Task]) -> Iterator[Outcome]:
    return map(analyze_task, tasks)


@contextmanager
def executor(workers: int, scheduler: str | None, version: str) -> Iterator[Executor]:
    """In-process for one local worker (no Dask at all), else Dask: a local cluster or an existing one."""
    if scheduler is None and workers == 1:
        yield run_in_process
        return
    try:  # Dask is the optional `scan` extra: `--workers 1` works without it
        from pcapsense.scan import cluster
    except ImportError as exc:
        raise PcapsenseError(f"parallel scans need Dask ({exc}): pip install 'pcapsense[scan]', or use --workers 1"
                             ) from None
    with cluster.dask_client(workers, scheduler) as client:
        yield functools.partial(cluster.run_on_dask, client=client, version=version)
