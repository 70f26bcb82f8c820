"""The terminal summary: capture facts, the ladder, then findings grouped by layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pcapsense.findings import LAYERS

if TYPE_CHECKING:
    from pcapsense.engine import AnalysisResult

STATUS_MARK = {"clean": "ok", "suspect": "??", "broken": "XX", "not observed": "--"}


def render(result: AnalysisResult, echo: Callable[[str], None]) -> None:
    cap = result.capture
    span = ""
    if cap["first_ts"] is not None:
        span = f", {cap['last_ts'] - cap['first_ts']:.3f} s"
    links = ", ".join(sorted({lt["name"] for lt in cap["link_types"]})) or "no interfaces"
    echo(f"{cap['path']}: {cap['format']}{' (' + cap['compression'] + ')' if cap['compression'] else ''}, "
         f"{cap['packets']} packets, {cap['bytes']} bytes{span}; {links}")
    if cap["partial"]:
        echo("PARTIAL ANALYSIS: reading stopped at a damaged record; results cover the records before it.")
    for warning in cap["warnings"]:
        echo(f"  warning: {warning}")
    tcp = result.stats["tcp"]
    echo(f"  TCP connections {tcp.get('connections', 0)}, SYNs {tcp.get('syn', 0)}, retransmissions "
         f"{tcp.get('retransmissions', 0) + tcp.get('fast_retransmissions', 0)}, half-open "
         f"{tcp.get('handshake_half_open', 0)}; DNS queries {result.stats['dns'].get('queries', 0)} "
         f"(unanswered {result.stats['dns'].get('unanswered', 0)})")
    evicted = result.stats["flows"].get("evicted_flow_cap", 0)
    if evicted:
        echo(f"  flow table full: {evicted} flows evicted (half-open first); raise with --max-flows")
    if result.stats["malformed"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.stats["malformed"].items()))
        echo(f"  malformed packets: {kinds}")
    echo("")
    echo("Triage ladder (bottom-up):")
    for rung in result.ladder:
        echo(f"  [{STATUS_MARK[rung.status]}] {rung.rung:<4} {rung.status:<12} {rung.note}")
    echo(f"  => {result.narrative}")
    for layer in LAYERS:
        mine = [f for f in result.findings if f.layer == layer]
        if not mine:
            continue
        echo("")
        echo(f"{layer}:")
        for f in mine:
            echo(f"  [{f.severity}] {f.detector}: {f.title}")
            echo(f"      {f.summary}")
            if f.filter:
                echo(f"      wireshark: {f.filter}")
            echo(f"      remedy ({f.owner}): {f.remedy}")
            for caveat in f.caveats:
                echo(f"      caveat: {caveat}")
    if not result.findings:
        echo("")
        echo("No findings.")
