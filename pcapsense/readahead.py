"""Decoded batches for the engine: read and decode here, or ahead of the engine in a forked child process.

Why a child: walking records and decoding headers cost roughly as much CPU as flow tracking, event streams and
detectors together, and they depend on nothing downstream. With two or more cores, a forked child walks and
decodes batch n+1 while the engine works on batch n, so a large capture takes close to half the wall time.

Batches cross through an anonymous shared mapping created before the fork, in SLOTS fixed slots (one being
filled, one being read), so decoded columns are copied once and never pickled. The engine hands a slot back
when it asks for the next batch; nothing downstream keeps views of a batch's columns past its turn (streams,
records and state are built from copies: fancy indexing, DataFrame construction).

The packet bytes of a regular, uncompressed capture are not copied at all: the child reads them through
mappings of the file (reader.chunks.MappedChunks) and sends only a batch's file range; the parent maps the
same range itself (the descriptor is inherited across fork), so it faults in only the pages the engine touches
(and their fault-around neighbours), and the mapping goes when the engine drops the batch. Other inputs (stdin,
pipes, decompressed streams) have their bytes copied into the slot with the columns. A capture file cut shorter
while mapped makes the next access to a lost page raise SIGBUS: in the child that kills it, and the parent
reports its death by that signal as a ReaderProcessError; in the parent, or when reading in-process, it ends
the process. Neither is handled otherwise.

Small captures never fork: the child starts only once FORK_AFTER_BYTES have been read here, so tiny and
sample captures cost nothing extra. The child continues the very generator this process started (fork copies
it mid-iteration); the parent never resumes its copy and instead mirrors the reader's progress and final state
(interfaces, warnings, fault, counters) from the child's messages, so the engine reads the reader as if it had
walked the file itself. There is no fork without os.fork, on a single CPU, or while other threads run (a Dask
worker, a server: a forked child can deadlock on a lock another thread held at fork time).
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from dataclasses import fields
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pcapsense.decode.columns import Packets, decode_batch
from pcapsense.errors import PcapsenseError
from pcapsense.reader.batch import RawBatch
from pcapsense.reader.chunks import MappedChunks
from pcapsense.reader.open import CaptureReader
from pcapsense.reader.walker import Walker

FORK_AFTER_BYTES = 16 * 2**20  # read one chunk in-process first: a smaller capture is done before a fork pays
MAX_BATCH_ROWS = 65_536  # packets per decoded batch: bounds the columns (~45 x 8 bytes per packet) of tiny frames
SLOTS = 2  # one being filled by the child while the engine reads the other
SLOT_BYTES = 64 * 2**20  # a chunk (16 MiB + one carried record) and its decoded columns; larger travels pickled
ALIGN = 64
PACKET_FIELDS = tuple(f.name for f in fields(Packets))
READER_STATE = tuple(f.name for f in fields(Walker) if f.name != "chunks")

Layout = tuple[tuple[str, str, tuple[int, ...], int], ...]  # (column, dtype, shape, offset in the slot)
FileRange = tuple[int, int]  # (offset, length) of a batch's `data` in a mapped capture file
Shipped = tuple[int, Layout, FileRange | None]  # slot, the columns in it, where `data` is when not in it


class ReaderProcessError(PcapsenseError):
    """The read-ahead child ended without reporting its end of stream (killed, out of memory)."""


def decoded_batches(reader: CaptureReader, parallel: bool = True) -> Iterator[Packets]:
    """Decode every batch of the capture, in this process or (for large inputs) in a forked child."""
    batches = _bounded(reader.batches())
    for batch in batches:
        yield _decode(reader, batch)
        if parallel and reader.chunks.base >= FORK_AFTER_BYTES and can_fork():
            yield from _forked(reader, batches)
            return


def _bounded(batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
    """Split batches into at most MAX_BATCH_ROWS packets, each over just its own bytes (views, no copies).

    A 16 MiB chunk of minimum-size frames holds ~220,000 packets, whose decoded columns would take ~80 MB and
    not fit a shared slot; bounded batches keep decoding temporaries and slots small whatever the packet size."""
    for batch in batches:
        n = len(batch)
        if n <= MAX_BATCH_ROWS:
            yield batch
            continue
        for lo in range(0, n, MAX_BATCH_ROWS):
            rows = slice(lo, min(lo + MAX_BATCH_ROWS, n))
            first = int(batch.offset[rows.start])
            last = int(batch.offset[rows.stop - 1] + batch.caplen[rows.stop - 1])
            yield RawBatch(data=batch.data[first:last], offset=batch.offset[rows] - first,
                           caplen=batch.caplen[rows], wirelen=batch.wirelen[rows], ts_ns=batch.ts_ns[rows],
                           frame=batch.frame[rows], iface=batch.iface[rows])


def can_fork() -> bool:
    """Forking pays and is safe: fork exists, a second CPU is ours, and this process runs a single thread."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return hasattr(os, "fork") and cpus >= 2 and threading.active_count() == 1


def _decode(reader: CaptureReader, batch: RawBatch) -> Packets:
    linktypes = np.array([i.linktype for i in reader.interfaces], dtype=np.int64)
    return decode_batch(batch, linktypes)


# -- parent ---------------------------------------------------------------------------------------------------


def _forked(reader: CaptureReader, batches: Iterator[RawBatch]) -> Iterator[Packets]:
    mapped = reader.chunks if isinstance(reader.chunks, MappedChunks) else None
    shared = mmap.mmap(-1, SLOTS * SLOT_BYTES)
    from_child, child_out = Pipe(duplex=False)
    child_in, to_child = Pipe(duplex=False)
    gc.freeze()  # the child's collections then skip (and do not copy-on-write) every object inherited from here
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        from_child.close()
        to_child.close()
        _child(reader, batches, shared, child_out, child_in, mapped)
    gc.unfreeze()
    child_out.close()
    child_in.close()
    reader.chunks.buf = b""  # the child owns the stream now; drop this process's copy of the chunk (or window)
    child = _Child(pid)
    try:
        while True:
            message = child.receive(from_child)
            kind = message[0]
            if kind == "end":
                _mirror(reader, message[1])
                return
            if kind == "error":
                raise message[1]
            _, payload, consumed, interfaces = message
            reader.chunks.base = consumed
            reader.interfaces[:] = interfaces
            if kind == "slot":
                yield _unpack(shared, payload, mapped)
                _hand_back(to_child, payload[0])
            else:
                yield payload
    finally:
        child.reap()
        from_child.close()
        to_child.close()


class _Child:
    """The read-ahead process: reaped exactly once, killed only while it is certainly still ours."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    def receive(self, conn: Connection) -> tuple[Any, ...]:
        try:
            return conn.recv()
        except EOFError:
            self.reap()
            raise ReaderProcessError(f"the read-ahead process ended with {self._how()} before the end of the "
                                     "capture") from None

    def reap(self) -> None:
        """Wait for the child; one still running (the engine stopped early, or failed) is killed first."""
        if self.status is not None:
            return
        done, status = os.waitpid(self.pid, os.WNOHANG)
        if not done:
            os.kill(self.pid, signal.SIGKILL)
            done, status = os.waitpid(self.pid, 0)
        self.status = status

    def _how(self) -> str:
        status = self.status or 0
        if os.WIFSIGNALED(status):
            return f"signal {os.WTERMSIG(status)}"
        return f"exit status {os.WEXITSTATUS(status)}"


def _hand_back(conn: Connection, slot: int) -> None:
    """The engine asked for the next batch, so it is done with this slot. A child that already sent its last
    batch has exited: it needs no slot, and a child that died is reported by the next receive."""
    with contextlib.suppress(BrokenPipeError):
        conn.send(slot)


def _unpack(shared: mmap.mmap, payload: Shipped, mapped: MappedChunks | None) -> Packets:
    """The batch's columns as views of its slot; its `data`, when the child sent a file range (only a mapped
    stream does), as a mapping of that range starting at the very byte the child's view did."""
    slot, layout, data_at = payload
    base = slot * SLOT_BYTES
    columns = {name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=shared, offset=base + offset)
               for name, dtype, shape, offset in layout}
    if mapped is not None and data_at is not None:
        columns["data"] = mapped.file_bytes(*data_at)
    return Packets(**columns)


def _mirror(reader: CaptureReader, state: dict[str, Any]) -> None:
    """Make this process's reader tell what the child's reader learned (the engine reads it after the pass)."""
    reader.chunks.base = state.pop("consumed")
    for name, value in state.items():
        setattr(reader, name, value)


# -- child ----------------------------------------------------------------------------------------------------


def _child(reader: CaptureReader, batches: Iterator[RawBatch], shared: mmap.mmap, out: Connection,
           free_slots: Connection,
           mapped: MappedChunks | None) -> None:  # pragma: no cover - measured through the parent's tests
    """Read, decode and ship batches until the end of the capture; never returns (os._exit)."""
    code = 0
    try:
        free = list(range(SLOTS))
        for batch in batches:
            packets = _decode(reader, batch)
            if not free:
                free.append(free_slots.recv())
            slot = free.pop()
            data_at = mapped.file_range(packets.data) if mapped is not None else None
            layout = _pack(packets, shared, slot, with_data=data_at is None)
            progress = (reader.chunks.base, list(reader.interfaces))
            if layout is None:
                free.append(slot)
                out.send(("pickled", packets, *progress))
            else:
                out.send(("slot", (slot, layout, data_at), *progress))
        state = {name: getattr(reader, name) for name in READER_STATE}
        out.send(("end", {**state, "consumed": reader.chunks.base}))
    except BaseException as exc:  # every failure must reach the parent, which re-raises it
        code = 1
        try:
            out.send(("error", exc))
        except Exception:  # an unpicklable exception still reaches the parent as text
            out.send(("error", ReaderProcessError(traceback.format_exc())))
    finally:
        os._exit(code)


def _pack(packets: Packets, shared: mmap.mmap, slot: int, with_data: bool) -> Layout | None:
    """Copy every column (`data` too unless it travels as a file range) into the slot; None when the batch does
    not fit (it then travels pickled)."""
    columns = [(name, np.ascontiguousarray(getattr(packets, name))) for name in PACKET_FIELDS
               if with_data or name != "data"]
    if any(column.dtype.hasobject for _, column in columns):
        return None
    layout, offset = [], 0
    for name, column in columns:
        layout.append((name, column.dtype.str, column.shape, offset))
        offset += -(-column.nbytes // ALIGN) * ALIGN
    if offset > SLOT_BYTES:
        return None
    target = np.frombuffer(shared, dtype=np.uint8, count=SLOT_BYTES, offset=slot * SLOT_BYTES)
    for (_name, column), (_, _, _, at) in zip(columns, layout, strict=True):
        target[at : at + column.nbytes] = column.reshape(-1).view(np.uint8)
    return tuple(layout)
