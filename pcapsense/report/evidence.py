"""`--extract-evidence`: one small capture per finding holding exactly its evidence frames, for Wireshark.

The analysis streamed the capture once and kept no packets, so extraction is a second pass over the file that
copies only the frames the findings name. Files are named `evidence/<detector-id>-<n>.pcap` from the detector
id and an index, never from packet data. A capture with one link type gives classic pcap with that link type
and nanosecond timestamps (exact whatever the input's resolution); a capture whose interfaces have several link
types gives pcapng with the original interfaces, because classic pcap holds a single link type. Reading stdin
or a pipe cannot be repeated, so extraction then only says that it needs a file.
"""

from __future__ import annotations

import os
import struct
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from pcapsense.errors import PcapsenseError
from pcapsense.findings import Finding
from pcapsense.reader import open_capture
from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED
from pcapsense.report.outdir import OutputDir, safe_name

MAX_FRAMES_PER_FINDING = 10_000
SNAPLEN = 262_144  # libpcap's maximum, which the reader also enforces
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB, PCAPNG_IDB, PCAPNG_EPB, PCAPNG_BYTE_ORDER = 0x0A0D0D0A, 1, 6, 0x1A2B3C4D
IF_TSRESOL_NS = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)  # if_tsresol = 10^-9, end of options
NEEDS_FILE = "evidence extraction needs a capture file: this capture was read from stdin or a pipe"


@dataclass(frozen=True)
class EvidenceFile:
    """What extraction produced for one finding: the file (relative to the report) or why there is none."""

    path: str | None
    written: int
    wanted: int
    note: str


def rereadable(capture_path: str | None) -> bool:
    """A capture can be read a second time only from a regular file."""
    return capture_path is not None and capture_path != "-" and os.path.isfile(capture_path)


def extract(findings: list[Finding], capture: dict[str, Any], capture_path: str | None, out: OutputDir,
            max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> list[EvidenceFile]:
    """Write each finding's evidence frames; one entry per finding, in the order of `findings`."""
    if capture_path is None or not rereadable(capture_path):
        return [EvidenceFile(None, 0, len(set(f.evidence.frames)), NEEDS_FILE) for f in findings]
    wanted = [sorted(set(f.evidence.frames))[:MAX_FRAMES_PER_FINDING] for f in findings]
    owners: dict[int, list[int]] = defaultdict(list)
    for index, frames in enumerate(wanted):
        for frame in frames:
            owners[frame].append(index)
    linktypes = {lt["interface"]: lt["linktype"] for lt in capture["link_types"]}
    suffix = ".pcap" if len(set(linktypes.values())) <= 1 else ".pcapng"
    paths = [name + suffix for name in _names(findings)]
    writers: dict[int, _Writer] = {}

    def writer_for(index: int) -> _Writer:
        if index not in writers:
            writers[index] = _Writer(out.open(paths[index]), linktypes)
        return writers[index]

    try:
        written = _copy(capture_path, owners, max_decompressed, writer_for)
    except (PcapsenseError, OSError) as exc:
        return [EvidenceFile(None, 0, len(w), f"evidence extraction failed: {exc}") for w in wanted]
    finally:
        for writer in writers.values():
            writer.close()
    return [_describe(paths[i] if written[i] else None, written[i], len(frames), len(set(findings[i].evidence.frames)))
            for i, frames in enumerate(wanted)]


def _names(findings: list[Finding]) -> list[str]:
    """`evidence/<detector-id>-<n>`, n counting the findings of each detector from 1."""
    seen: Counter[str] = Counter()
    names = []
    for finding in findings:
        detector = safe_name(finding.detector.lower(), "finding")
        seen[detector] += 1
        names.append(f"evidence/{detector}-{seen[detector]}")
    return names


def _copy(path: str, owners: dict[int, list[int]], max_decompressed: int,
          writer_for: Callable[[int], _Writer]) -> Counter[int]:
    """Second pass: copy each wanted frame to the writers of the findings that name it, in file order."""
    written: Counter[int] = Counter()
    wanted = np.fromiter(owners, dtype=np.int64)
    last = int(wanted.max()) if len(wanted) else 0
    opened = open_capture(path, max_decompressed=max_decompressed)
    try:
        for batch in opened.reader.batches():
            for row in np.flatnonzero(np.isin(batch.frame, wanted)).tolist():
                packet = (int(batch.iface[row]), int(batch.ts_ns[row]), int(batch.wirelen[row]),
                          batch.packet_bytes(row))
                for index in owners[int(batch.frame[row])]:
                    writer_for(index).write(*packet)
                    written[index] += 1
            if len(batch) and int(batch.frame[-1]) >= last:
                break
    finally:
        opened.close()
    return written


def _describe(path: str | None, written: int, wanted: int, named: int) -> EvidenceFile:
    if not named:
        return EvidenceFile(None, 0, 0, "this finding names no evidence frames")
    cut = f" (the first {wanted} of {named})" if wanted < named else ""
    if written == wanted:
        return EvidenceFile(path, written, wanted, f"{written} evidence frames{cut}")
    return EvidenceFile(path, written, wanted, f"{written} of {wanted} evidence frames{cut} found on the second "
                                               "read (the capture file changed or was cut)")


class _Writer:
    """Classic pcap (one link type) or pcapng (several), written as frames arrive."""

    def __init__(self, fh: BinaryIO, linktypes: dict[int, int]) -> None:
        self.fh = fh
        self.ng = len(set(linktypes.values())) > 1
        if self.ng:
            fh.write(_block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BYTE_ORDER, 1, 0, -1)))
            for _, linktype in sorted(linktypes.items()):
                fh.write(_block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, SNAPLEN) + IF_TSRESOL_NS))
        else:
            linktype = next(iter(linktypes.values()), 1)
            fh.write(struct.pack("<IHHiIII", PCAP_MAGIC_NSEC, 2, 4, 0, 0, SNAPLEN, linktype))

    def write(self, iface: int, ts_ns: int, wirelen: int, data: bytes) -> None:
        if self.ng:
            body = struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), wirelen) + data
            self.fh.write(_block(PCAPNG_EPB, body))
        else:
            sec, nsec = divmod(ts_ns, 1_000_000_000)
            self.fh.write(struct.pack("<IIII", sec, nsec, len(data), wirelen) + data)

    def close(self) -> None:
        self.fh.close()


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)
