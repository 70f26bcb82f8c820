"""The triage ladder: walk the stack bottom-up and say, in one sentence, which layer broke and who owns it.

Seed, "The Layered Mental Model for Incident Triage": start low and climb, only ascending once the layer below
is proven healthy, and narrate the layer you are on ("L3 is clean, L4 handshake completes, DNS resolves
correctly, TLS is valid - so we're above the transport, this is application or payload-size").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcapsense.findings import LAYER_OWNERS, LAYERS, Finding, Severity

# How a healthy rung is narrated, in the seed's words.
CLEAN_PHRASES = {
    "L2": "L2 is clean",
    "L3": "L3 is clean",
    "L4": "the L4 handshake completes",
    "DNS": "DNS resolves",
    "TLS": "TLS is valid",
    "L7": "HTTP requests complete",
}
BROKEN_AT = Severity.HIGH  # a rung with a finding at or above this is broken; any lower finding makes it suspect


@dataclass(frozen=True, slots=True)
class Rung:
    rung: str
    status: str  # clean / suspect / broken / not observed
    note: str
    owner: str

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "status": self.status, "note": self.note, "owner": self.owner}


def _rung(layer: str, findings: list[Finding], observed: bool) -> Rung:
    mine = [f for f in findings if f.layer == layer and f.severity > Severity.INFO]
    worst = max(mine, key=lambda f: f.severity, default=None)
    if worst is None:
        status = "clean" if observed else "not observed"
        note = CLEAN_PHRASES[layer] if observed else f"no {layer} traffic in this capture"
        return Rung(layer, status, note, LAYER_OWNERS[layer])
    status = "broken" if worst.severity >= BROKEN_AT else "suspect"
    return Rung(layer, status, worst.title, worst.owner)


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def build_ladder(findings: list[Finding], observed: dict[str, bool]) -> tuple[list[Rung], str]:
    """The six rungs, and the one-sentence narrative that hands the incident to the right owner."""
    rungs = [_rung(layer, findings, observed.get(layer, False)) for layer in LAYERS]
    faulty = next((r for r in rungs if r.status == "broken"), None) or next(
        (r for r in rungs if r.status == "suspect"), None)
    if faulty is None:
        clean = [CLEAN_PHRASES[r.rung] for r in rungs if r.status == "clean"]
        unseen = [r.rung for r in rungs if r.status == "not observed"]
        sentence = (_join(clean) or "No layer could be judged") + (
            f" ({_join(unseen)} not observed)" if unseen else "")
        return rungs, sentence + " - so no layer failure signature is in this capture; if users still see a fault, " \
                                 "it is above the transport: application or payload size."
    below = [r for r in rungs[: rungs.index(faulty)]]
    proven = [CLEAN_PHRASES[r.rung] for r in below if r.status == "clean"]
    lead = (_join(proven) + " - so ") if proven else ""
    finding = next(f for f in findings if f.layer == faulty.rung and f.title == faulty.note)
    sentence = (f"{lead}the fault is at {faulty.rung} ({faulty.status}): {finding.title.rstrip('.')}; "
                f"owner: {faulty.owner}; next: {finding.remedy.rstrip('.')}.")
    return rungs, sentence[0].upper() + sentence[1:]
