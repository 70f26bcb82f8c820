"""Slowloris: HTTP/1 request headers trickled in tiny segments and never completed.

Seed §5 ("L7 — slowloris and payload attacks"): slowloris holds many connections open by sending HTTP headers a
few bytes at a time and never finishing the request, so a per-connection worker model runs out of slots while
bandwidth and CPU stay low; L4 rate limiting cannot see it because every connection looks legitimate. The seed's
mitigation table prescribes header/body timeouts at an L7 proxy and connection caps; its ownership table puts
L7 policy with the service team, with platform ingress owning the proxy engine.

Wireshark flags nothing for this pattern, so the rule is assembled from research-anchors §2.5:

* per HTTP/1 connection (as Zeek keys it, by its flow), measure the header phase from the request start to the
  moment the connection is last seen (its flow record's `last_ts`) while the blank line ending the header block
  has still not arrived — a connection whose headers complete is never the signature, however slow;
* compare it with Apache mod_reqtimeout's recommended `RequestReadTimeout header=20-40,MinRate=500`: 20 s,
  extended by 1 s per 500 bytes received, never beyond 40 s — past that limit a protected server answers 408;
* require the trickle: at least one header segment that arrives seconds after the previous one and carries fewer
  bytes than MinRate for that gap (slowloris tools send one short header line every ~4-15 s);
* aggregate per client -> server:port and count how many such connections were open at the same time: more than a
  browser ever opens to one host is an attack (high); one is a slow or stalled client (low).

State stays bounded: per-connection state lives only while the core is still following an incomplete header
block (the flow table bounds that), and per finding only counters, a capped interval list and capped evidence.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.events import HTTP_HEADER_LIMIT
from pcapsense.findings import Evidence, Finding, FlowRef, Severity, frame_filter

HTTP_COLUMNS = ("frame", "ts", "conn_id", "bytes", "kind", "complete", "method", "target", "host")
MAX_FRAMES = 50  # evidence frames per finding
MAX_START_FRAMES = 40  # of which request starts; the rest are trickle frames
TRICKLE_FRAMES_PER_CONN = 3
MAX_FLOWS = 50  # FlowRefs per finding
MAX_INTERVALS = 100_000  # connections per client -> server:port kept for the concurrency sweep
LOWER_BOUND_ENDS = ("end-of-capture", "evicted-flow-cap")

REMEDY = (
    "Put header/body timeouts in front of the service at the L7 proxy or ingress (Apache mod_reqtimeout "
    "RequestReadTimeout header=20-40,MinRate=500; nginx client_header_timeout/client_body_timeout; HAProxy "
    "timeout http-request) and cap concurrent connections per client IP, so trickling clients are cut off "
    "before they hold every worker slot."
)
OWNER = "Service team (with platform ingress)"


@dataclass(frozen=True)
class Thresholds:
    header_timeout_s: float = tunable(
        20.0, source="Apache mod_reqtimeout recommended RequestReadTimeout header=20-40,MinRate=500",
        doc="base time a request's header block may take before the server should give up (408)")
    header_timeout_max_s: float = tunable(
        40.0, source="Apache mod_reqtimeout recommended RequestReadTimeout header=20-40,MinRate=500",
        doc="the header limit never grows beyond this, however many bytes arrive")
    min_rate_bytes_s: float = tunable(
        500.0, source="Apache mod_reqtimeout recommended RequestReadTimeout header=20-40,MinRate=500",
        doc="each this many header bytes received extends the limit by 1 s; a late segment carrying fewer bytes "
            "than this rate over its gap is a trickle (0: a fixed limit, and no segment counts as a trickle)")
    trickle_gap_s: float = tunable(
        1.0, source="slowloris tools send a header line every ~4-15 s (research-anchors §2.5: "
                    "brunoabpereira/slowloris-detection README, Tada0 '1 byte every 15s'); 1 s stays below that "
                    "and above interactive round-trip times",
        doc="a header segment arriving at least this long after the previous one of the same request is late")
    min_trickles: int = tunable(
        1, source="a server enforcing header=20 cuts a slowloris connection after its first 15 s keep-alive line "
                  "(research-anchors §2.5), so one trickle is all a protected server lets through",
        doc="late, sub-MinRate header segments a connection needs before it counts as trickling")
    browser_max_connections: int = tunable(
        6, source="browsers open at most 6 concurrent HTTP/1.1 connections per host "
                  "(Firefox network.http.max-persistent-connections-per-server=6, Chromium's per-group limit 6)",
        doc="more concurrent incomplete-header connections than this from one client to one server:port is an "
            "attack (high); 2 up to this many is medium, a single one low")


@dataclass(slots=True)
class _Pending:
    """A request whose header block the core is still following."""

    start_ts: float
    start_frame: int
    method: str
    target: str
    http_host: str | None
    last_ts: float
    bytes: int
    trickles: int = 0
    trickle_bytes: int = 0
    trickle_gap_s: float = 0.0
    trickle_frames: list[int] = field(default_factory=list)

    def add_segment(self, frame: int, ts: float, size: int, t: Thresholds) -> None:
        """Count a later header segment; it is a trickle when late and slower than MinRate over its gap."""
        gap = ts - self.last_ts
        if gap >= t.trickle_gap_s and size < t.min_rate_bytes_s * gap:
            self.trickles += 1
            self.trickle_bytes += size
            self.trickle_gap_s += gap
            if len(self.trickle_frames) < TRICKLE_FRAMES_PER_CONN:
                self.trickle_frames.append(frame)
        self.last_ts = max(self.last_ts, ts)
        self.bytes += size

    @property
    def followed_to_limit(self) -> bool:
        """The core stops following a header block after 64 KiB; what happened after that is unknown."""
        return self.bytes >= HTTP_HEADER_LIMIT


@dataclass(slots=True)
class _Group:
    """Connections of one client to one server:port whose headers stayed incomplete past the limit."""

    connections: int = 0
    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))
    start_frames: list[int] = field(default_factory=list)
    trickle_frames: list[int] = field(default_factory=list)
    flows: list[FlowRef] = field(default_factory=list)
    min_duration: float = float("inf")
    max_duration: float = 0.0
    max_limit: float = 0.0
    max_bytes: int = 0
    max_rate: float = 0.0
    trickles: int = 0
    trickle_bytes: int = 0
    trickle_gap_s: float = 0.0
    lower_bound: int = 0
    followed_to_limit: int = 0
    http_hosts: set[str] = field(default_factory=set)

    def add(self, p: _Pending, end_ts: float, limit: float, flow: FlowRef, lower_bound: bool) -> None:
        duration = end_ts - p.start_ts
        self.connections += 1
        if len(self.starts) < MAX_INTERVALS:
            self.starts.append(p.start_ts)
            self.ends.append(end_ts)
        if len(self.start_frames) < MAX_START_FRAMES:
            self.start_frames.append(p.start_frame)
        if len(self.trickle_frames) < MAX_FRAMES:
            self.trickle_frames.extend(p.trickle_frames)
        if len(self.flows) < MAX_FLOWS:
            self.flows.append(flow)
        self.min_duration = min(self.min_duration, duration)
        self.max_duration = max(self.max_duration, duration)
        self.max_limit = max(self.max_limit, limit)
        self.max_bytes = max(self.max_bytes, p.bytes)
        self.max_rate = max(self.max_rate, p.bytes / duration)
        self.trickles += p.trickles
        self.trickle_bytes += p.trickle_bytes
        self.trickle_gap_s += p.trickle_gap_s
        self.lower_bound += lower_bound
        self.followed_to_limit += p.followed_to_limit
        if p.http_host and len(self.http_hosts) < 5:
            self.http_hosts.add(p.http_host)

    def max_concurrent(self) -> int:
        """Most connections open at once: a sweep over start (+1) and end (-1) events, ends first on ties."""
        times = np.concatenate([np.frombuffer(self.starts), np.frombuffer(self.ends)])
        steps = np.concatenate([np.ones(len(self.starts)), -np.ones(len(self.ends))])
        order = np.lexsort((steps, times))
        return int(np.cumsum(steps[order]).max())


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class Slowloris(Detector):
    id = "slowloris"
    layer = "L7"
    title = "HTTP request headers trickled and never completed (slowloris)"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.pending: dict[int, _Pending] = {}
        self.groups: dict[tuple[str, str, int], _Group] = {}

    def on_http(self, df: pd.DataFrame) -> None:
        """Follow every request whose header block is incomplete, segment by segment, until it completes."""
        conns = df["conn_id"].to_numpy()
        incomplete = conns[~df["complete"].to_numpy(dtype=bool)]
        keep = np.flatnonzero(np.isin(conns, incomplete) | np.isin(conns, list(self.pending)))
        if not len(keep):
            return
        for frame, ts, conn, size, kind, complete, method, target, http_host in zip(
                *(df[name].to_numpy()[keep].tolist() for name in HTTP_COLUMNS), strict=True):
            p = self.pending.get(conn)
            if complete:
                self.pending.pop(conn, None)
            elif kind == "request" and (p is None or (p.method, p.target) != (method, target)):
                # A new request; the same request line again on a pending connection is a retransmission.
                host = http_host if isinstance(http_host, str) else None  # a missing Host header is NaN here
                self.pending[conn] = _Pending(ts, frame, method, target, host, ts, size)
            elif kind == "header-segment" and p is not None:
                p.add_segment(frame, ts, size, self.t)

    def on_flows(self, df: pd.DataFrame) -> None:
        """A flow record ends the header phase of a still-incomplete request: judge it against the limit."""
        if not self.pending:
            return
        done = df[df["conn_id"].isin(self.pending.keys())]
        # still open when the capture ended or the flow table let it go: its header phase may have gone on
        cut_short = done["end_reason"].isin(LOWER_BOUND_ENDS) & done["closed_ts"].isna()
        for conn, orig, oport, resp, rport, last_ts, lower_bound in zip(
                done["conn_id"].tolist(), done["orig"].tolist(), done["orig_port"].tolist(), done["resp"].tolist(),
                done["resp_port"].tolist(), done["last_ts"].tolist(), cut_short.tolist(), strict=True):
            p = self.pending.pop(conn)
            end_ts = p.last_ts if p.followed_to_limit else last_ts
            rate = self.t.min_rate_bytes_s
            limit = min(self.t.header_timeout_s + (p.bytes / rate if rate > 0 else 0.0), self.t.header_timeout_max_s)
            if end_ts - p.start_ts > limit and p.trickles >= self.t.min_trickles:
                group = self.groups.setdefault((orig, resp, int(rport)), _Group())
                group.add(p, end_ts, limit, FlowRef("tcp", orig, int(oport), resp, int(rport)), lower_bound)

    def finish(self) -> Iterable[Finding]:
        for (client, server, port), g in self.groups.items():
            yield self._finding(client, server, port, g)

    def _finding(self, client: str, server: str, port: int, g: _Group) -> Finding:
        concurrent = g.max_concurrent()
        tiers = (
            (self.t.browser_max_connections + 1, Severity.HIGH, "Slowloris: many connections holding HTTP headers open",
             "slowloris-style exhaustion of the server's worker/connection slots"),
            (2, Severity.MEDIUM, "Several HTTP connections holding headers open",
             "several stalled clients behind one address or a low-rate slowloris probe"),
            (1, Severity.LOW, "Slow HTTP client: request headers never completed",
             "one slow or stalled client, not an attack by itself"),
        )
        severity, title, verdict = next((s, t, v) for floor, s, t, v in tiers if concurrent >= floor)
        trickle_size = g.trickle_bytes / max(g.trickles, 1)
        trickle_gap = g.trickle_gap_s / max(g.trickles, 1)
        frames = sorted(set(g.start_frames + g.trickle_frames[:MAX_FRAMES - len(g.start_frames)]))
        target = _endpoint(server, port)
        held = (f"{g.connections} HTTP connections to {target} (up to {concurrent} open at once) whose request "
                "headers never completed: they stayed" if g.connections > 1 else
                f"an HTTP connection to {target} whose request headers never completed: it stayed")
        span = (f"{g.min_duration:.1f}-{g.max_duration:.1f}" if g.max_duration - g.min_duration >= 0.05
                else f"{g.max_duration:.1f}")
        summary = (
            f"{client} held {held} incomplete for {span} s, past the {g.max_limit:.1f} s mod_reqtimeout-style "
            f"limit, while ~{trickle_size:.0f}-byte segments trickled in every ~{trickle_gap:.1f} s "
            f"(at most {g.max_rate:.1f} B/s) — {verdict}."
        )
        caveats = [text for count, text in (
            (g.lower_bound, f"{g.lower_bound} of {g.connections} connections were still open when the capture ended "
                            "(or were evicted from the flow table); their header durations are lower bounds."),
            (g.followed_to_limit, f"{g.followed_to_limit} connections sent {HTTP_HEADER_LIMIT} header bytes without "
                                  "a blank line; pcapsense stops following a header block there, so their duration "
                                  "is measured to the last followed segment."),
            (g.connections > MAX_INTERVALS, f"concurrency was computed over the first {MAX_INTERVALS} connections."),
        ) if count]
        return Finding(
            detector=self.id, layer=self.layer, severity=severity, title=title, summary=summary,
            evidence=Evidence(
                frames=frames, flows=list(g.flows), hosts=[client, server],
                window=(float(np.min(np.frombuffer(g.starts))), float(np.max(np.frombuffer(g.ends)))),
                metrics={
                    "client": client, "server": server, "port": port, "connections": g.connections,
                    "max_concurrent": concurrent, "header_duration_s_min": round(g.min_duration, 3),
                    "header_duration_s_max": round(g.max_duration, 3), "header_limit_s": round(g.max_limit, 3),
                    "header_bytes_max": g.max_bytes, "header_rate_bytes_s_max": round(g.max_rate, 3),
                    "trickle_segments": g.trickles, "trickle_bytes_mean": round(trickle_size, 1),
                    "trickle_gap_s_mean": round(trickle_gap, 3), "http_hosts": sorted(g.http_hosts),
                },
            ),
            filter=frame_filter(frames), remedy=REMEDY, owner=OWNER, caveats=caveats,
        )
