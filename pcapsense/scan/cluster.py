"""Run the tasks on Dask: a local cluster of worker processes, or an existing cluster at a scheduler address.

A worker process that dies (a crash, or its nanny killing it over the memory limit) is not a bad capture: the
task is submitted once more, then recorded failed. The local cluster's scheduler runs with `allowed_failures=0`
so that Dask reports the first death to us instead of re-running the task up to three times on its own; an
existing cluster applies its own `distributed.scheduler.allowed-failures` first. Workers are warmed up (imports,
detector entry points) before the first task so start-up cost does not land on the first captures.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
from distributed import Client, KilledWorker, LocalCluster, as_completed
from distributed.comm import CommClosedError

from pcapsense.errors import PcapsenseError
from pcapsense.scan.catalog import FAILED, Outcome, new_outcome, one_line
from pcapsense.scan.runner import Task, analyze_task, detectors

ATTEMPTS = 2  # a capture whose worker died is submitted once more, then recorded failed
# Dask gives its workers MALLOC_TRIM_THRESHOLD_=65536. Setting it at all turns off glibc's dynamic mmap threshold, so
# every 16 MiB read chunk is mmap'd and faulted in afresh: analyses ran about 40 % slower. The local cluster unsets it.
WORKER_ENV = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
WORKER_LOST = (KilledWorker, CommClosedError)
CONNECT_TIMEOUT_S = 30


def run_on_dask(tasks: list[Task], client: Client, version: str,
                work: Callable[[Task], Outcome] = analyze_task) -> Iterator[Outcome]:
    """Outcomes in completion order; a task whose worker died is submitted again, once.

    Tasks are submitted in the caller's order (largest capture first, so the batch does not end waiting on one big
    file). `work` is the task function; tests substitute one that crashes its worker.
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
            exc = future.exception() if future.status == "error" else None  # None: cancelled, its worker gone
            lost = exc is None or isinstance(exc, WORKER_LOST)
            if lost and client.status != "running":
                raise PcapsenseError(f"lost the Dask scheduler (task {future.status}); run the same command again "
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
    detectors()


def _connect(stack: contextlib.ExitStack, workers: int, scheduler: str | None) -> Client:
    if scheduler:
        return stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False))
    with dask.config.set(WORKER_ENV):
        cluster = stack.enter_context(LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.CRITICAL, scheduler_kwargs={"allowed_failures": 0}))
    return stack.enter_context(Client(cluster, set_as_default=False))


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of a local cluster of `workers` single-threaded processes."""
    with contextlib.ExitStack() as stack:
        try:
            client = _connect(stack, workers, scheduler)
            client.run(warm_up)
        except OSError:  # the scheduler is unreachable: its message names the address
            raise
        except Exception as exc:  # a worker that cannot start, or cannot import pcapsense on an existing cluster
            raise PcapsenseError(f"cannot start the Dask workers: {type(exc).__name__}: {exc}") from None
        yield client
