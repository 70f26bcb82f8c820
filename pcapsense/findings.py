"""The finding model: what a detector tells the analyst, with the evidence to check it in Wireshark."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    """Ordered so that `--fail-on` can compare: a finding trips it when its severity is at or above."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.strip().upper()]

    def __str__(self) -> str:
        return self.name.lower()


# The rungs of the seed's triage ladder, bottom-up (DNS and TLS as explicit rungs between L4 and L7).
LAYERS = ("L2", "L3", "L4", "DNS", "TLS", "L7")

# Who owns a layer (seed, "Owner and Decision Altitude"); detectors may name a narrower owner per finding.
LAYER_OWNERS = {
    "L2": "Network / cloud fabric team",
    "L3": "Network / platform team",
    "L4": "Platform + service team",
    "DNS": "Platform / DNS (resolver) owners",
    "TLS": "Security + platform team",
    "L7": "Service team",
}


@dataclass(frozen=True, slots=True)
class FlowRef:
    """A flow as its 5-tuple, originator first."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int

    def __str__(self) -> str:
        src = f"[{self.src}]" if ":" in self.src else self.src
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        return f"{self.proto} {src}:{self.sport} -> {dst}:{self.dport}"


@dataclass(slots=True)
class Evidence:
    """What an analyst opens to verify a finding: frames, flows, hosts, the time window and the numbers."""

    frames: list[int] = field(default_factory=list)
    flows: list[FlowRef] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    window: tuple[float, float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Finding:
    detector: str
    layer: str
    severity: Severity
    title: str
    summary: str
    evidence: Evidence
    filter: str
    remedy: str
    owner: str
    caveats: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"finding layer {self.layer!r} is not one of {', '.join(LAYERS)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        data["evidence"]["flows"] = [asdict(f) | {"text": str(f)} for f in self.evidence.flows]
        window = self.evidence.window
        data["evidence"]["window"] = list(window) if window else None
        return data


def frame_filter(frames: list[int], limit: int = 200) -> str:
    """A Wireshark display filter selecting exactly these frames (`frame.number in {1, 5, 9}`; Wireshark 4
    needs the commas)."""
    shown = sorted(set(frames))[:limit]
    return "frame.number in {" + ", ".join(str(f) for f in shown) + "}" if shown else ""
