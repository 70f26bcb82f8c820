"""The decoder's common-layout path (untagged Ethernet / IPv4 without options / TCP, read as one record per packet)
gives every packet exactly what the general, layer-by-layer steps give it.

Compared column by column on every bundled sample, every real capture in ../shared (when present), and frames
built around the path's edges: each header byte of a common frame and its captured and wire lengths mutated in
turn, TCP headers of every length with and without the NOP NOP timestamps layout, frames cut by the snaplen, and
a frame whose record would reach past the end of the chunk.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from pcapsense.decode.columns import OwnArrays, Packets, _Decoder, decode_batch
from pcapsense.errors import PcapsenseError
from pcapsense.reader import open_capture
from pcapsense.reader.batch import RawBatch
from tests.conftest import REAL_PCAPS

TIMESTAMPS = bytes([1, 1, 8, 10]) + bytes(range(8))
MSS_SACK_WS = bytes([2, 4, 5, 0xB4, 4, 2, 1, 3, 3, 7])


def tcp_frame(options: bytes = b"", payload: bytes = b"GET / HTTP/1.1\r\n", flags: int = 0x18,
              frag: int = 0x4000) -> bytes:
    options += bytes(-len(options) % 4)
    tcp = struct.pack(">HHIIBBHHH", 40000, 80, 1000, 2000, (5 + len(options) // 4) << 4, flags, 512, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(options) + len(payload), 7, frag, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return bytes(range(1, 7)) + bytes(range(11, 17)) + b"\x08\x00" + ip + tcp + options + payload


def batch_of(frames: list[bytes], caplens: list[int] | None = None, wirelens: list[int] | None = None,
             tail: bytes = b"") -> RawBatch:
    data = b"".join(frames) + tail
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    caplen = np.array(caplens or [len(f) for f in frames], dtype=np.int64)
    wirelen = np.array(wirelens or [len(f) for f in frames], dtype=np.int64)
    n = len(frames)
    return RawBatch(np.frombuffer(data, dtype=np.uint8), offsets, caplen, wirelen, np.arange(n, dtype=np.int64),
                    np.arange(1, n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64))


def assert_paths_agree(batch: RawBatch, linktypes: np.ndarray, where: str) -> int:
    """Decode both ways, compare every column; returns how many packets the common path took."""
    common, general = decode_batch(batch, linktypes), decode_batch(batch, linktypes, common=False)
    for field in dataclasses.fields(Packets):
        if field.name == "data":
            continue
        ours, theirs = getattr(common, field.name), getattr(general, field.name)
        assert ours.dtype == theirs.dtype, (where, field.name)
        differ = np.flatnonzero(ours != theirs)
        assert not len(differ), (where, field.name, differ[:5], ours[differ[:5]], theirs[differ[:5]])
    left = _Decoder(batch, linktypes, OwnArrays())._common_frames()
    return len(batch) - len(left)


def test_common_frames_take_the_common_path() -> None:
    """The path is taken at all (else the comparisons below prove nothing), and not for what it must leave."""
    frames = [tcp_frame(), tcp_frame(TIMESTAMPS), tcp_frame(MSS_SACK_WS, b"", 0x02), tcp_frame(frag=0x2000),
              tcp_frame()[:13] + b"\x86\xdd" + tcp_frame()[14:]]
    taken = assert_paths_agree(batch_of(frames, tail=bytes(80)), np.array([1]), "built")
    assert taken == 3  # the fragment and the IPv6 ethertype go the general way


def test_every_header_byte_and_length_mutated() -> None:
    """Each byte of the frame's first 70 bytes set to values around the path's conditions, and lengths cut."""
    rng = random.Random(7)
    bases = [tcp_frame(), tcp_frame(TIMESTAMPS), tcp_frame(TIMESTAMPS, b""), tcp_frame(MSS_SACK_WS, b"", 0x02),
             tcp_frame(TIMESTAMPS + bytes([1, 1, 5, 10]) + bytes(8)), tcp_frame(payload=b"")]
    frames, caplens, wirelens = [], [], []
    for base in bases:
        for at in range(min(len(base), 72)):
            for value in {0, 0xFF, base[at] ^ 0x01, base[at] ^ 0x10, base[at] ^ 0x80, rng.randrange(256)}:
                frame = base[:at] + bytes([value]) + base[at + 1:]
                frames.append(frame)
                caplens.append(len(frame))
                wirelens.append(len(frame))
        for cut in range(30, len(base) + 1):
            frames.append(base)
            caplens.append(cut)  # cut by the snaplen: the bytes past `cut` belong to the next record
            wirelens.append(len(base) + rng.choice((0, 0, 4, 1000)))
    batch = batch_of(frames, caplens, wirelens)
    taken = assert_paths_agree(batch, np.array([1]), "mutated")
    assert len(frames) / 2 < taken < len(frames)


def test_other_link_types_never_take_the_common_path() -> None:
    frame = tcp_frame()
    batch = batch_of([frame] * 4, tail=bytes(80))
    for linktype in (113, 101, 0, 147):
        assert assert_paths_agree(batch, np.array([linktype]), f"linktype {linktype}") == 0


def test_record_reaching_past_the_chunk_is_decoded_the_general_way() -> None:
    """The last frame's 70-byte record would end past the bytes there are: the general steps decode it."""
    frames = [tcp_frame(), tcp_frame(payload=b"")]  # the last one is 54 bytes long, and nothing follows it
    assert assert_paths_agree(batch_of(frames), np.array([1]), "end of chunk") == 1
    # a record read from where the chunk's last 70 bytes start (as a clamped read would) is a common frame here
    whole = tcp_frame(payload=b"x" * 16)
    batch = batch_of([whole[:16], whole[16:]], caplens=[16, 54], wirelens=[16, 70])
    assert assert_paths_agree(batch, np.array([1]), "clamped") == 0


def _decode_both_ways(path: Path) -> None:
    try:
        opened = open_capture(str(path))
    except PcapsenseError:  # captures the reader refuses are tested elsewhere
        return
    try:
        for batch in opened.reader.batches():
            linktypes = np.array([i.linktype for i in opened.reader.interfaces], dtype=np.int64)
            assert_paths_agree(batch, linktypes, path.name)
    finally:
        opened.close()


def test_samples_decode_alike_both_ways(samples: Path) -> None:
    captures = sorted(p for p in samples.iterdir() if ".pcap" in p.name)
    assert len(captures) > 20
    for path in captures:
        _decode_both_ways(path)


@pytest.mark.skipif(not REAL_PCAPS.is_dir(), reason="../shared/pcaps/real not present")
def test_real_captures_decode_alike_both_ways() -> None:
    captures = sorted(p for p in REAL_PCAPS.iterdir() if ".pcap" in p.name)
    assert captures
    for path in captures:
        _decode_both_ways(path)
