"""The numbers the pages state in words: capture facts and each layer's key figures.

Kept apart from the templates so the pages only lay out what is computed here. Values are raw (numbers and
text); the templates escape them. A key figure that is non-zero where zero is healthy is flagged so the page
can colour it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pcapsense.engine import AnalysisResult


@dataclass(frozen=True)
class Figure:
    """One key figure: its name, its value as text, and whether it is a warning sign."""

    name: str
    value: str
    warn: bool = False


def utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:,.3f} s" if value < 120 else f"{value / 60:,.1f} min"


def count(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def capture_rows(result: AnalysisResult) -> list[tuple[str, str]]:
    """The capture as (fact, value) rows: what was read, how much, when, and whether all of it."""
    cap, stats = result.capture, result.stats
    first, last = cap.get("first_ts"), cap.get("last_ts")
    links = ", ".join(f"{lt['name']} (interface {lt['interface']})" for lt in cap["link_types"]) or "none"
    flows = stats.get("flows", {})
    rows = [
        ("File", cap["path"]),
        ("Format", cap["format"] + (f", {cap['compression']}-compressed" if cap.get("compression") else "")),
        ("Link types", links),
        ("Packets", f"{count(cap['packets'])} ({count(cap['bytes'])} bytes)"),
        ("First packet", utc(first)),
        ("Last packet", utc(last)),
        ("Duration", seconds(last - first) if first is not None and last is not None else "-"),
        ("Connections", f"{count(flows.get('tcp', 0))} TCP, {count(flows.get('udp', 0))} UDP, "
                        f"{count(flows.get('other', 0))} other"),
        ("Read", "PARTIAL: reading stopped at a damaged record; results cover the records before it"
         if cap.get("partial") else "complete"),
    ]
    if flows.get("evicted_flow_cap"):
        rows.append(("Flow table", f"full: {count(flows['evicted_flow_cap'])} flows evicted (half-open first); "
                                   "raise with --max-flows"))
    if stats.get("malformed"):
        rows.append(("Malformed packets", ", ".join(f"{k} {count(v)}" for k, v in sorted(stats["malformed"].items()))))
    rows.append(("Detectors run", ", ".join(result.detectors) or "none installed"))
    if stats.get("elapsed_s") is not None:
        rows.append(("Analysis time", seconds(stats["elapsed_s"])))
    return rows


def _sum(series: dict[str, Any], layer: str, name: str) -> int:
    return int(sum(series.get(layer, {}).get(name) or ()))


def _percentile(values: list[float], q: int) -> float | None:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (
        values[0] if values else None)


def _l2(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    duplicates = _sum(series, "L2", "broadcast_duplicate")
    return [Figure("ARP packets", count(result.stats["protocols"].get("arp", 0))),
            Figure("ARP requests", count(_sum(series, "L2", "arp_request"))),
            Figure("ARP replies", count(_sum(series, "L2", "arp_reply"))),
            Figure("broadcast frames", count(_sum(series, "L2", "broadcast"))),
            Figure("recirculated broadcasts", count(duplicates), duplicates > 0)]


def _l3(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    proto, tcp, quality = result.stats["protocols"], result.stats["tcp"], result.stats["capture_quality"]
    retrans = tcp.get("retransmissions", 0) + tcp.get("fast_retransmissions", 0)
    acked = [int(k) for k in series.get("L3", {}).get("largest_acked", {})]
    never = [int(k) for k in series.get("L3", {}).get("never_acked", {})]
    return [Figure("IPv4 packets", count(proto.get("ipv4", 0))), Figure("IPv6 packets", count(proto.get("ipv6", 0))),
            Figure("IP fragments", count(proto.get("ip_fragments", 0))),
            Figure("ICMP errors", count(_sum(series, "L3", "icmp_errors"))),
            Figure("TCP retransmissions", count(retrans), retrans > 0),
            Figure("largest ACKed segment", f"{max(acked)} B" if acked else "-"),
            Figure("largest never-ACKed segment", f"{max(never)} B" if never else "-", bool(never)),
            Figure("segments over the link MTU", count(quality.get("oversized_segments", 0)))]


def _l4(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    tcp, flows = result.stats["tcp"], result.stats["flows"]
    half, syn_only = tcp.get("handshake_half_open", 0), tcp.get("handshake_syn_only", 0)
    return [Figure("TCP connections", count(tcp.get("connections", 0))), Figure("SYNs", count(tcp.get("syn", 0))),
            Figure("SYN-ACKs", count(tcp.get("syn_ack", 0))),
            Figure("handshakes completed", count(tcp.get("handshake_complete", 0))),
            Figure("half-open handshakes", count(half), half > 0),
            Figure("SYNs never answered", count(syn_only), syn_only > 0),
            Figure("resets", count(tcp.get("rst", 0))), Figure("UDP flows", count(flows.get("udp", 0)))]


def _dns(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    dns = result.stats["dns"]
    waits = [float(v) / 1e3 for v in series.get("DNS", {}).get("rtt", {}).get("ms", [])]
    errors = dns.get("rcode_SERVFAIL", 0) + dns.get("rcode_REFUSED", 0)
    return [Figure("queries", count(dns.get("queries", 0))), Figure("responses", count(dns.get("responses", 0))),
            Figure("unanswered", count(dns.get("unanswered", 0)), dns.get("unanswered", 0) > 0),
            Figure("NXDOMAIN", count(dns.get("rcode_NXDOMAIN", 0))),
            Figure("SERVFAIL / REFUSED", count(errors), errors > 0),
            Figure("median response", seconds(statistics.median(waits)) if waits else "-"),
            Figure("95th percentile", seconds(_percentile(waits, 95)))]


def _tls(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    outcomes = series.get("TLS", {}).get("outcomes", {})
    failed = {name: outcomes.get(name, 0) for name in ("fatal alert", "reset", "no answer")}
    return [Figure("TLS records seen", count(result.stats["tcp"].get("tls_handshake_records", 0))),
            Figure("handshakes (ClientHello)", count(sum(outcomes.values()))),
            Figure("ServerHello received", count(outcomes.get("ServerHello", 0))),
            *(Figure(name, count(n), n > 0) for name, n in failed.items())]


def _l7(result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    req = series.get("L7", {}).get("requests", {})
    done = [s for s, c in zip(req.get("seconds", []), req.get("complete", []), strict=True) if c]
    open_ = [s for s, c in zip(req.get("seconds", []), req.get("complete", []), strict=True) if not c]
    sampled = f" (sample of {len(req.get('t', []))})" if req.get("omitted") else ""
    return [Figure("HTTP requests", count(result.stats["tcp"].get("http_request_starts", 0))),
            Figure("header blocks completed" + sampled, count(len(done))),
            Figure("never completed" + sampled, count(len(open_)), bool(open_)),
            Figure("median completion", seconds(statistics.median(done)) if done else "-"),
            Figure("longest left open", seconds(max(open_)) if open_ else "-", bool(open_))]


KEY_FIGURES: dict[str, Callable[[AnalysisResult, dict[str, Any]], list[Figure]]] = {
    "L2": _l2, "L3": _l3, "L4": _l4, "DNS": _dns, "TLS": _tls, "L7": _l7,
}


def key_figures(layer: str, result: AnalysisResult, series: dict[str, Any]) -> list[Figure]:
    return KEY_FIGURES[layer](result, series)
