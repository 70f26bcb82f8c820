"""What every record walker keeps: its chunked input, what it learned and what it counted."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pcapsense.reader.batch import CaptureFault, Interface
from pcapsense.reader.chunks import ChunkStream

# struct prefix of the machine's byte order: fields in this order can be read through a uint32 memoryview
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"


@dataclass
class Walker:
    """State shared by the pcap and pcapng walkers; the engine reads it after the pass."""

    chunks: ChunkStream
    format: str = ""
    interfaces: list[Interface] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fault: CaptureFault | None = None
    counters: dict[str, int] = field(default_factory=dict)  # skipped blocks, truncated frames, ...
    records: int = 0  # packets delivered

    def count(self, name: str, value: int = 1) -> None:
        if value:
            self.counters[name] = self.counters.get(name, 0) + value
