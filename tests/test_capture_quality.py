"""Capture-quality facts are measured by the core and attached as caveats to the findings they weaken."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pcapsense.detector import Detector, tunable
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.findings import Evidence, Finding, Severity


@dataclass(frozen=True)
class _Thresholds:
    layer: str = tunable("L3", source="test", doc="layer of the finding to emit")


class AlwaysFires(Detector):
    """A stand-in detector: one finding at a chosen layer, so the caveats the engine attaches can be seen."""

    id = "always-fires"
    layer = "L3"
    title = "test"
    Thresholds = _Thresholds

    def finish(self) -> Iterable[Finding]:
        yield Finding(self.id, self.t.layer, Severity.LOW, "t", "s", Evidence(), "", "r", "o")


def run(path: Path, layer: str = "L3") -> tuple[dict, list[str]]:
    result = analyze(str(path), AnalysisOptions(registry={"always-fires": AlwaysFires},
                                                overrides={"always-fires": {"layer": layer}}))
    return result.stats, result.findings[0].caveats


def test_mirrored_duplicates_are_not_retransmissions(samples: Path) -> None:
    stats, caveats = run(samples / "pmtud_neg_mirrored_dupes.pcap")
    assert stats["tcp"]["mirrored_duplicates"] > 10
    assert stats["tcp"].get("retransmissions", 0) == 0
    assert any("mirrored duplicate" in c for c in caveats)


def test_offload_sized_segments_become_a_caveat(samples: Path) -> None:
    stats, caveats = run(samples / "tso_oversized.pcap")
    assert stats["capture_quality"]["oversized_segments"] > 0
    assert any("larger than the 1500-byte link MTU" in c for c in caveats)
    _, l2_caveats = run(samples / "tso_oversized.pcap", layer="L2")
    assert not any("link MTU" in c for c in l2_caveats)  # an L2 finding is not weakened by TCP offload


def test_snaplen_truncation_is_counted(samples: Path) -> None:
    stats, caveats = run(samples / "fmt_pcap_snaplen96.pcap", layer="DNS")
    assert stats["capture_quality"]["truncated_by_snaplen"] > 0
    assert any("truncated by the snapshot length" in c for c in caveats)


def test_one_sided_capture_is_named(samples: Path) -> None:
    stats, caveats = run(samples / "asym_routing.pcap", layer="L4")
    assert stats["capture_quality"]["acks_without_peer"] > 100
    assert any("one-sided capture point" in c for c in caveats)
    clean_stats, clean_caveats = run(samples / "healthy.pcap", layer="L4")
    assert clean_caveats == []
    assert clean_stats["capture_quality"]["acks_without_peer"] == 0
