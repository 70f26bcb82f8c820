"""The `pcapsense` console script and `python -m pcapsense`: the CLI (cli.py) in a process of its own.

What belongs here is what only a whole process may decide, before the CLI is imported and after it has finished.
In-process callers (tests, other programs) use `cli.main` and keep their own settings.
"""

from __future__ import annotations

import gc
import os

# numpy's OpenBLAS starts a pool of threads when numpy is imported, one per further CPU, and each spins for about
# 0.1 s of CPU waiting for matrix work before it sleeps. pcapsense does no such work, and that spin took a core
# from the read-ahead child and the engine exactly while they started (on a 2-CPU machine: 0.1-0.15 s of CPU).
# Dask's nanny sets the same for its workers. An explicit setting in the environment is kept.
SINGLE_THREADED_MATH = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def run() -> None:
    """Ask the math libraries for one thread (SINGLE_THREADED_MATH), run the CLI, then freeze the heap.

    Why freeze: as the process ends, the interpreter's final collections walk every object still alive (numpy,
    pandas and their modules: hundreds of thousands), which took 0.13-0.16 s at the end of every analysis on the
    2M-packet benchmark. Frozen objects are skipped; their memory goes back with the process. Every command
    closes its files, catalogs and clusters itself (context managers), so nothing waits on a collection to be
    closed."""
    for name, value in SINGLE_THREADED_MATH.items():
        os.environ.setdefault(name, value)
    from pcapsense.cli import main  # numpy is imported from here on

    try:
        main()
    finally:
        gc.freeze()
