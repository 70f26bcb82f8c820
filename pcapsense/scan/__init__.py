"""Batch scanning: find every capture under some paths, analyse them in parallel, keep the results in a catalog.

One job per module, in the order data flows:
`discover` (walk, recognise captures by magic, refuse what must not be opened) -> `catalog` (SQLite, what is
already known and may be skipped, one transaction per capture) -> `runner` (one capture as a task, run
in-process) or `cluster` (tasks on Dask workers, retried once when a worker dies) -> `reports` (where each
capture's report lives) -> `fleet` (the index over the whole archive). `batch` strings them together; `cli`
holds the `scan` and `findings` commands.
"""
