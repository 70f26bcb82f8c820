"""Run the analyses, in-process or on Dask workers, and turn every failure into a recorded outcome.

Workers read captures and write report files; they hand back plain `Outcome` dicts and never touch the catalog,
which only the client writes. Inside a worker, any exception from an analysis becomes a failed outcome with a
one-line reason (a `PcapsenseError` as is, anything else as `Type: message`), so one bad capture never stops the
batch. A worker process that dies (a crash, or its nanny killing it over the memory limit) is another matter: the
capture is submitted once more, then recorded failed. The local cluster's scheduler runs with
`allowed_failures=0` so that Dask tells us about the first death instead of re-running the task up to three
times on its own; an existing cluster applies its own `distributed.scheduler.allowed-failures` first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, KilledWorker, LocalCluster, as_completed
from distributed.comm import CommClosedError

from pcapsense import __version__
from pcapsense.detector import Detector, load_detectors
from pcapsense.engine import AnalysisOptions, AnalysisResult, analyze
from pcapsense.errors import NotACaptureError, PcapsenseError
from pcapsense.scan.catalog import FAILED, OK, PARTIAL, UNCHANGED, Outcome, analyzer_version, new_outcome, one_line
from pcapsense.scan.reports import write_capture_report

ATTEMPTS = 2  # a capture whose worker died is submitted once more, then recorded failed
WORKER_LOST = (KilledWorker, CommClosedError)
HASH_CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 30

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
def _detectors() -> dict[str, type[Detector]]:
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
    version = analyzer_version(__version__, _detectors())
    facts: dict[str, Any] = {}
    try:
        st = os.stat(task.path)
        facts.update(size=st.st_size, mtime=st.st_mtime)
        if not stat.S_ISREG(st.st_mode):  # replaced since discovery; a FIFO would block the hash forever
            raise NotACaptureError(f"{task.path}: not a regular file")
        facts["sha256"] = file_sha256(task.path)
        if facts["sha256"] == task.known_sha256:
            return new_outcome(task.key, UNCHANGED, version, **facts)
        result = analyze(task.path, AnalysisOptions(max_decompressed=task.max_decompressed, registry=_detectors()))
        write_capture_report(result, Path(task.out_dir), task.report)
    except PcapsenseError as exc:
        return new_outcome(task.key, FAILED, version, error=one_line(str(exc)), **facts)
    except Exception as exc:
        return new_outcome(task.key, FAILED, version, error=one_line(f"{type(exc).__name__}: {exc}"), **facts)
    return new_outcome(task.key, PARTIAL if result.capture["partial"] else OK, version, **facts, **_analysed(result))


def run_in_process(tasks: list[Task]) -> Iterator[Outcome]:
    return map(analyze_task, tasks)


def run_on_dask(tasks: list[Task], client: Client, version: str,
                work: Callable[[Task], Outcome] = analyze_task) -> Iterator[Outcome]:
    """Outcomes in completion order; a task whose worker died is submitted again, once.

    Larger captures are submitted first (the caller sorts), so the batch does not end waiting on one big file.
    """
    attempts: dict[str, tuple[Task, int]] = {}

    def submit(task: Task, attempt: int) -> Any:
        future = client.submit(work, task, pure=False)
        attempts[future.key] = (task, attempt)
        return future

    pending = as_completed([submit(task, 1) for task in tasks], loop=client.loop)
    for future in pending:
        task, attempt = attempts.pop(future.key)
        if future.status == "finished":
            yield future.result()
        else:
            exc = future.exception()
            lost = isinstance(exc, WORKER_LOST)
            if lost and client.status != "running":
                raise PcapsenseError(f"lost the Dask scheduler ({type(exc).__name__}); run the same command again "
                                     "to resume") from None
            if lost and attempt < ATTEMPTS:
                pending.add(submit(task, attempt + 1))
            else:
                reason = f"the worker analysing it died {attempt} times" if lost else f"{type(exc).__name__}: {exc}"
                yield new_outcome(task.key, FAILED, version, error=one_line(f"{task.path}: {reason}"))
        future.release()


def warm_up() -> None:
    """Import the analyzer and read the detector entry points on every worker before the first task, so start-up
    cost is paid once, up front, rather than inflating the first captures' analyses."""
    _detectors()


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of a local cluster of `workers` single-threaded processes."""
    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.CRITICAL, scheduler_kwargs={"allowed_failures": 0}))
            client = stack.enter_context(Client(cluster, set_as_default=False))
        try:
            client.run(warm_up)
        except Exception as exc:  # e.g. pcapsense not installed on an existing cluster's workers
            raise PcapsenseError(f"the Dask workers cannot load pcapsense: {type(exc).__name__}: {exc}") from None
        yield client


@contextmanager
def executor(workers: int, scheduler: str | None, version: str) -> Iterator[Executor]:
    """In-process for one local worker (no Dask at all), else Dask: local cluster or an existing one."""
    if scheduler is None and workers == 1:
        yield run_in_process
        return
    with dask_client(workers, scheduler) as client:
        yield functools.partial(run_on_dask, client=client, version=version)
