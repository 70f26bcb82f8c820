"""Decoded batches for the engine: read and decode here, or ahead of the engine in a forked child process.

Why a child: walking records and decoding headers cost roughly as much CPU as flow tracking, event streams and
detectors together, and they depend on nothing downstream. With two or more cores, a forked child walks and
decodes batch n+1 while the engine works on batch n, so a large capture takes close to half the wall time.

Batches cross through an anonymous shared mapping created before the fork, in SLOTS fixed slots: one being
filled, one being read, and two more so that the child decodes ahead while the engine loads pandas and the
detectors, or delivers to detectors every few batches (each slot holds ~12 MB of touched pages). The child
decodes straight into a slot (each column has a region of its own there, SlotLayout), so decoded columns are
never copied or pickled: copying them in after decoding took the child, the busier process, 0.2 s of its 2.5 s
on the 2M-packet benchmark. The engine hands a slot back when it asks for the next batch; nothing downstream
keeps views of a batch's columns past its turn (streams, records and state are built from copies: fancy
indexing, DataFrame construction). A batch's DNS messages (a few hundred small rows, decoded with it:
decode/dnsbatch.py) travel pickled alongside.

The packet bytes of a regular, uncompressed capture are not copied at all: the child reads them through
mappings of the file (reader.chunks.MappedChunks) and sends only a batch's file range; the parent maps the
same range itself (the descriptor is inherited across fork), so it faults in only the pages the engine touches
(and their fault-around neighbours), and the mapping goes when the engine drops the batch. Other inputs (stdin,
pipes, decompressed streams) have their bytes copied into the slot with the columns. A capture file cut shorter
while mapped makes the next access to a lost page raise SIGBUS: in the child that kills it, and the parent
reports its death by that signal as a ReaderProcessError; in the parent, or when reading in-process, it ends
the process. Neither is handled otherwise.

A capture file of at least FORK_AFTER_BYTES forks at once, and its consecutive 16 MiB chunks are joined two
by two (up to ENGINE_BATCH_ROWS packets) into one engine batch over one file range, in the child or in-process
alike (_Held): reading and decoding stay on 16 MiB chunks, whose headers are still in the CPU cache when they
are decoded, while the engine, whose cost per batch is largely fixed, sees half as many batches (on the
2M-packet benchmark its CPU went from 3.6 s to 3.0 s; a third chunk per batch saved no more and cost memory).
`start` opens such a file and forks before the caller loads the engine: `pcapsense analyze` imports pandas and
the detectors (about 0.35 s) while the child already decodes.

Other input (stdin, pipes, decompressed streams, smaller files) is read here until FORK_AFTER_BYTES have gone
by, then forks, batch by batch, so tiny and sample captures cost nothing extra. The child continues the very
generator this process started (fork copies it mid-iteration); the parent never resumes its copy and instead
mirrors the reader's progress and final state (interfaces, warnings, fault, counters) from the child's
messages, so the engine reads the reader as if it had walked the file itself. There is no fork without
os.fork, on a single CPU, or while other threads run (a Dask worker, a server: a forked child can deadlock on
a lock another thread held at fork time).
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import signal
import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, fields, replace
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from pcapsense.decode.columns import COLUMN_TYPES, POSITION_COLUMNS, ColumnSpace, Packets, decode_batch
from pcapsense.decode.dnsbatch import DnsMessages
from pcapsense.errors import PcapsenseError
from pcapsense.reader.batch import RawBatch
from pcapsense.reader.chunks import MappedChunks
from pcapsense.reader.open import CaptureReader, OpenCapture, open_capture
from pcapsense.reader.walker import Walker

FORK_AFTER_BYTES = 16 * 2**20  # a file this large forks at once, other input once this much was read
MAX_BATCH_ROWS = 65_536  # packets per decoded batch: bounds the columns (~45 x 8 bytes per packet) of tiny frames
ENGINE_BATCH_ROWS = 32_768  # consecutive batches of a large mapped file are joined up to this many packets (_Held)
SLOTS = 4  # batches shipped and not yet handed back, at most
SLOT_BYTES = 64 * 2**20  # columns of MAX_BATCH_ROWS packets (~22 MB) and a chunk's bytes; larger travels pickled
ALIGN = 64
PACKET_FIELDS = tuple(f.name for f in fields(Packets))
NO_BYTES = np.zeros(0, dtype=np.uint8)
READER_STATE = tuple(f.name for f in fields(Walker) if f.name != "chunks")

Layout = tuple[tuple[str, str, tuple[int, ...], int], ...]  # (column, dtype, shape, offset in the slot)
FileRange = tuple[int, int]  # (offset, length) of a batch's `data` in a mapped capture file
Shipped = tuple[int, Layout, FileRange | None]  # slot, the columns in it, where `data` is when not in it


class ReaderProcessError(PcapsenseError):
    """The read-ahead child ended without reporting its end of stream (killed, out of memory)."""


@dataclass
class Decoded:
    """One engine batch: its packets, and their DNS messages, decoded with them (see decode/dnsbatch.py)."""

    packets: Packets
    dns: DnsMessages

    @classmethod
    def of(cls, packets: Packets) -> Decoded:
        return cls(packets, DnsMessages.of(packets))


class Batches(Protocol):
    """Decoded batches, one engine batch at a time; close() stops the read-ahead child if one runs."""

    def __iter__(self) -> Iterator[Decoded]: ...

    def __next__(self) -> Decoded: ...

    def close(self) -> None: ...


def decoded_batches(reader: CaptureReader, parallel: bool = True) -> Batches:
    """Decode every batch of the capture, in this process or in a forked child.

    A capture file of at least FORK_AFTER_BYTES when opened forks its child at once, and its chunks are joined
    into engine batches from the first on (_Held). Any other input (stdin, pipes, decompressed streams, smaller
    files) is read here until FORK_AFTER_BYTES have been read, then forks, batch by batch. Forking or not never
    changes the batches the engine sees."""
    batches = _bounded(reader.batches())
    mapped = _mapped(reader)
    join = mapped is not None and mapped.file_size() >= FORK_AFTER_BYTES
    if join and parallel and can_fork():
        return _ReadAhead(reader, batches, join)
    return _here(reader, batches, join, parallel)


def _here(reader: CaptureReader, batches: Iterator[RawBatch], join: bool,
          parallel: bool) -> Generator[Decoded, None, None]:
    """Batches decoded in this process; input that is not a large file forks once FORK_AFTER_BYTES were read."""
    mapped = _mapped(reader)
    if join:  # a large file read in this process (one CPU, other threads running, or asked to)
        for held in _held(reader, batches, join):
            yield held.joined(mapped)
        return
    for batch in batches:
        yield Decoded.of(_decode(reader, batch))
        if parallel and reader.chunks.base >= FORK_AFTER_BYTES and can_fork():
            read_ahead = _ReadAhead(reader, batches, join)
            try:
                yield from read_ahead
            finally:
                read_ahead.close()
            return


@dataclass
class Started:
    """A capture opened, and its read-ahead child at work, before the engine and its dependencies were loaded."""

    opened: OpenCapture
    batches: Batches

    def close(self) -> None:
        self.batches.close()
        self.opened.close()


def start(path: str) -> Started | None:
    """Open `path` and fork its read-ahead child now, when it is a capture file large enough to fork for at once
    (see decoded_batches) and this process can fork; None otherwise, and the engine opens the capture itself.

    Why: `pcapsense analyze` imports pandas and the detectors (about 0.35 s) only after this, while the child
    already reads and decodes; the engine then finds its first batches waiting."""
    try:
        if path == "-" or not can_fork() or not os.path.isfile(path) or os.path.getsize(path) < FORK_AFTER_BYTES:
            return None
        opened = open_capture(path)
    except (OSError, PcapsenseError):
        return None  # the engine opens it again and reports the problem as usual
    batches = decoded_batches(opened.reader)
    if isinstance(batches, _ReadAhead):
        return Started(opened, batches)
    batches.close()
    opened.close()
    return None


def _mapped(reader: CaptureReader) -> MappedChunks | None:
    return reader.chunks if isinstance(reader.chunks, MappedChunks) else None


def _held(reader: CaptureReader, batches: Iterator[RawBatch], join: bool,
          slots: Callable[[RawBatch, FileRange | None], _Slot | None] = lambda *_: None) -> Iterator[_Held]:
    """Decoded batches, joined where they can be when `join` (see _Held), one engine batch at a time. Each engine
    batch is decoded into the slot `slots` gives for its first part (waiting for one to be free), or into
    arrays of its own when it gives none."""
    mapped = _mapped(reader)
    held: _Held | None = None
    for batch in batches:
        data_at = mapped.file_range(batch.data) if mapped is not None else None
        if held is not None and not held.joins(len(batch), data_at):
            yield held
            held = None
        if held is None:
            held = _Held(slots(batch, data_at))
        held.add(reader, batch, data_at)
        if not join or held.rows >= ENGINE_BATCH_ROWS or data_at is None:
            yield held
            held = None
    if held is not None:
        yield held


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


def _decode(reader: CaptureReader, batch: RawBatch, space: ColumnSpace | None = None) -> Packets:
    linktypes = np.array([i.linktype for i in reader.interfaces], dtype=np.int64)
    return decode_batch(batch, linktypes, space)


# -- parent ---------------------------------------------------------------------------------------------------


class _ReadAhead:
    """The read-ahead child, forked when this is made, and the batches it sends, as an iterator."""

    def __init__(self, reader: CaptureReader, batches: Iterator[RawBatch], join: bool) -> None:
        mapped = _mapped(reader)
        self._shared = mmap.mmap(-1, SLOTS * SLOT_BYTES)
        self._from_child, child_out = Pipe(duplex=False)
        child_in, self._to_child = Pipe(duplex=False)
        gc.freeze()  # the child's collections then skip (and do not copy-on-write) every object inherited from here
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
            self._from_child.close()
            self._to_child.close()
            _child(reader, batches, self._shared, child_out, child_in, join)
        gc.unfreeze()
        child_out.close()
        child_in.close()
        reader.chunks.buf = b""  # the child owns the stream now; drop this process's copy of the chunk (or window)
        self._child = _Child(pid)
        self._batches = self._receive(reader, mapped)

    def __iter__(self) -> Iterator[Decoded]:
        return self

    def __next__(self) -> Decoded:
        return next(self._batches)

    def close(self) -> None:
        """Stop receiving; the child, still running or not, is reaped (killed first if it still runs)."""
        self._batches.close()
        self._child.reap()
        self._from_child.close()
        self._to_child.close()

    def _receive(self, reader: CaptureReader, mapped: MappedChunks | None) -> Iterator[Decoded]:
        try:
            while True:
                message = self._child.receive(self._from_child)
                kind = message[0]
                if kind == "end":
                    _mirror(reader, message[1])
                    return
                if kind == "error":
                    raise message[1]
                _, payload, dns, consumed, interfaces = message
                reader.chunks.base = consumed
                reader.interfaces[:] = interfaces
                if kind == "slot":
                    yield Decoded(_unpack(self._shared, payload, mapped), dns)
                    _hand_back(self._to_child, payload[0])
                else:
                    yield Decoded(payload, dns)
        finally:
            self._child.reap()


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
           free_slots: Connection, join: bool) -> None:  # pragma: no cover - measured through the parent's tests
    """Read, decode and ship batches until the end of the capture; never returns (os._exit)."""
    code = 0
    mapped = _mapped(reader)
    try:
        free = list(range(SLOTS))
        layout = SlotLayout.of(MAX_BATCH_ROWS)

        def slot_for(batch: RawBatch, data_at: FileRange | None) -> _Slot | None:
            """A free slot (waiting for the engine to hand one back), unless the batch's columns, and its bytes
            when they do not travel as a file range, would not fit one: it then travels pickled."""
            data = 0 if data_at is not None else batch.data.nbytes
            if layout.bytes + data > SLOT_BYTES:
                return None
            if not free:
                free.append(free_slots.recv())
            return _Slot(shared, free.pop(), layout)

        for held in _held(reader, batches, join, slot_for):
            progress = (reader.chunks.base, list(reader.interfaces))
            if held.slot is None:
                out.send(("pickled", held.joined(mapped).packets, held.dns(), *progress))
            else:
                out.send(("slot", (held.slot.index, held.shipped(), held.data_at), held.dns(), *progress))
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


class _Held:
    """Consecutive decoded batches held until together they make one engine batch, then shipped as one.

    Why: the engine's cost per batch is largely fixed (hundreds of numpy calls whatever the row count), while
    reading and decoding are fastest on 16 MiB chunks (a chunk's headers are still in the CPU cache when they
    are decoded). Batches join only when their bytes lie in one file range (consecutive windows of a mapped
    file overlap or touch); other input (stdin, pipes, decompressed streams) ships batch by batch, so a live
    capture is never held back waiting for more packets.

    In the read-ahead child the parts are decoded straight into their slot, one after another (so the joined
    columns are there, nothing is copied); in-process, or when a batch does not fit a slot, into arrays of their
    own, concatenated when the batch is handed over."""

    def __init__(self, slot: _Slot | None) -> None:
        self.slot = slot
        self.parts: list[Packets] = []
        self.messages: list[tuple[int, DnsMessages]] = []  # each part's DNS messages, with its first row
        self.offsets: list[int] = []  # file offset of each part's `data`, when it travels as a file range
        self.data_at: FileRange | None = None  # the one file range every part's bytes lie in
        self.rows = 0
        self.data_bytes: int | None = None  # bytes of `data` copied into the slot (input not from a mapped file)

    def joins(self, rows: int, data_at: FileRange | None) -> bool:
        """Whether a batch of `rows` packets can be added: its bytes continue the held range."""
        if data_at is None or self.data_at is None or self.rows + rows > MAX_BATCH_ROWS:
            return False
        start, length = self.data_at
        return start <= data_at[0] <= start + length

    def add(self, reader: CaptureReader, batch: RawBatch, data_at: FileRange | None) -> None:
        if self.slot is not None:
            self.slot.first = self.rows
        packets = _decode(reader, batch, self.slot)
        self.messages.append((self.rows, DnsMessages.of(packets)))  # while the part still has its bytes
        if data_at is not None:  # the bytes travel as a range: let go of the view, and so of the window's mapping
            packets = replace(packets, data=NO_BYTES)
            self.offsets.append(data_at[0])
            if self.data_at is not None:
                start, length = self.data_at
                if self.slot is not None:
                    for name in POSITION_COLUMNS:
                        self.slot.move(name, len(packets), data_at[0] - start)
                data_at = (start, max(start + length, data_at[0] + data_at[1]) - start)
        elif self.slot is not None:
            self.data_bytes = self.slot.copy_data(packets.data)
        self.parts.append(packets)
        self.data_at = data_at
        self.rows += len(packets)

    def dns(self) -> DnsMessages:
        return DnsMessages.joined(self.messages)

    def shipped(self) -> Layout:
        """Where the batch's columns are in its slot."""
        assert self.slot is not None
        return self.slot.shipped(self.rows, self.data_bytes)

    def column(self, name: str) -> Iterator[np.ndarray]:
        """One column of each part in turn, positions into `data` moved to the joined range (by where the part's
        own bytes start in it)."""
        if self.data_at is None or name not in POSITION_COLUMNS:
            yield from (getattr(part, name) for part in self.parts)
            return
        for part, offset in zip(self.parts, self.offsets, strict=True):
            yield _moved(getattr(part, name), offset - self.data_at[0])

    def joined(self, mapped: MappedChunks | None) -> Decoded:
        """The parts as one batch over the joined range (in-process, or for a batch too large for a slot)."""
        if mapped is None or self.data_at is None:
            return Decoded(self.parts[0], self.dns())
        data = mapped.file_bytes(*self.data_at)
        if len(self.parts) == 1:
            return Decoded(replace(self.parts[0], data=data), self.dns())
        columns = {name: np.concatenate(list(self.column(name))) for name in PACKET_FIELDS if name != "data"}
        return Decoded(Packets(data=data, **columns), self.dns())


def _moved(column: np.ndarray, shift: int) -> np.ndarray:
    """A position column moved by `shift` (-1, no such layer, stays -1)."""
    return np.where(column >= 0, column + shift, column) if shift else column


@dataclass(frozen=True)
class SlotLayout:
    """Where each column lives in a slot: a region of `rows` values each, `data` (when copied) after them all."""

    columns: dict[str, tuple[np.dtype, int]]  # name -> (type, offset of its region)
    bytes: int  # the columns' regions, where `data` starts

    @classmethod
    def of(cls, rows: int) -> SlotLayout:
        columns, at = {}, 0
        for name in PACKET_FIELDS:
            if name != "data":
                dtype = np.dtype(COLUMN_TYPES[name][0])
                columns[name] = (dtype, at)
                at += -(-rows * dtype.itemsize // ALIGN) * ALIGN
        return cls(columns, at)


class _Slot:
    """One slot of the shared mapping as the decoder's column space (decode/columns.py ColumnSpace): the columns
    of the engine batch being filled, rows from `first` on, part after part."""

    def __init__(self, shared: mmap.mmap, index: int, layout: SlotLayout) -> None:
        self.shared, self.index, self.layout, self.first = shared, index, layout, 0

    def _view(self, name: str, n: int) -> np.ndarray:
        dtype, offset = self.layout.columns[name]
        at = self.index * SLOT_BYTES + offset + self.first * dtype.itemsize
        return np.ndarray((n,), dtype=dtype, buffer=self.shared, offset=at)

    def new(self, name: str, n: int) -> np.ndarray:
        column = self._view(name, n)
        column[...] = COLUMN_TYPES[name][1]
        return column

    def put(self, name: str, values: np.ndarray) -> np.ndarray:
        column = self._view(name, len(values))
        column[...] = values
        return column

    def move(self, name: str, n: int, shift: int) -> None:
        """Move the positions of the `n` rows from `first` on by `shift` (-1, no such layer, stays -1)."""
        column = self._view(name, n)
        np.add(column, shift, out=column, where=column >= 0)

    def copy_data(self, data: np.ndarray) -> int:
        """Copy the batch's bytes after the columns (input that is not a mapped file); returns their size."""
        start = self.index * SLOT_BYTES + self.layout.bytes
        np.ndarray((data.nbytes,), dtype=np.uint8, buffer=self.shared, offset=start)[...] = data
        return data.nbytes

    def shipped(self, rows: int, data_bytes: int | None) -> Layout:
        """The layout the engine unpacks: every column's first `rows` values, and the bytes when copied."""
        columns = tuple((name, dtype.str, (rows,), offset) for name, (dtype, offset) in self.layout.columns.items())
        if data_bytes is None:
            return columns
        return (*columns, ("data", np.dtype(np.uint8).str, (data_bytes,), self.layout.bytes))
