"""dns-failure: DNS queries that go unanswered, fail, crawl, or come back truncated with no TCP retry.

Why it matters (seed, "The Layered Mental Model for Incident Triage"): "It's always DNS" - DNS is what every
service depends on before it does anything else, the silent first domino, and it is an explicit rung of the
ladder between L4 and L7 with a one-line decisive test (`dig +short`). A capture shows the failure directly.

What fires, per resolver (research-anchors §2.7, netverdict `rules/dns.yaml`):
- no answer: a query with no response after `no_answer_attempts` attempts or `no_answer_s` of waiting. A query
  the capture stopped watching sooner is ambiguous (it may simply not have been answered yet): it is reported
  at low severity with a caveat once it has waited `slow_s`, and not at all before;
- SERVFAIL / REFUSED answers (the resolver itself says it cannot or will not resolve);
- slow answers: NOERROR after more than `slow_s`, measured from the client's first attempt;
- truncated answers (TC=1 over UDP) that the client did not retry over TCP/53 within `tcp_retry_s` (RFC 7766),
  with any TCP/53 connection attempt to the resolver that went unanswered or was refused;
- NXDOMAIN: a burst of distinct non-existent names (`nxdomain_burst` within `nxdomain_window_s`) is medium;
  fewer are reported as information. Names that are search-list expansions of a name the resolver did answer
  (`api.example.com.corp.local` next to `api.example.com`) are expected, not failures.

Queries are matched to responses by (client, resolver, id, name) (plus the query type, so A and AAAA are apart).
Not resolver failures, hence ignored: responses with no query in the capture (a reflection/amplification victim
receives those), messages other than standard queries (a dynamic UPDATE refused to a workstation is policy, not
a resolution failure), and multicast name resolution (mDNS 5353, LLMNR 5355: only port-53 servers are judged).
Nearly all traffic is plain exchanges (one query, answered NOERROR within `slow_s`), which only move counters:
they are picked out and counted vectorised, and only the other messages are matched one by one.
State stays bounded: outstanding queries are settled once they are older than `PENDING_HORIZON_S`, every table
is capped, and each finding keeps at most `MAX_FRAMES` evidence frames.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from pcapsense.aggregate import factorize_rows
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import LAYER_OWNERS, Evidence, Finding, FlowRef, Severity, frame_filter

SERVER_PORT = 53
NOERROR, NXDOMAIN = 0, 3
OPCODE_QUERY = 0  # dynamic updates (opcode 5) are routinely REFUSED to clients: not a resolution failure
FAILURE_RCODES = {2: "SERVFAIL", 5: "REFUSED"}
PENDING_HORIZON_S = 60.0  # far past any stub resolver's give-up time (glibc: 5 s x 2 attempts)
MAX_TRACKED = 100_000  # outstanding queries, truncated answers awaiting a TCP retry
MAX_NAMES = 50_000  # remembered answered names and NXDOMAIN names
MAX_FRAMES = 50  # evidence frames per finding
MAX_QUERY_FRAMES = 8  # frames kept per outstanding query (its attempts)
MAX_IDS = 16  # transaction ids kept per outstanding query
MAX_LISTED = 20  # clients / flows / names listed per finding
SHOWN_NAMES = 3  # names quoted in a summary


@dataclass(frozen=True)
class Thresholds:
    no_answer_s: float = tunable(
        5.0, source="netverdict rules/dns.yaml (>= 5000 ms without reply); glibc resolver default timeout 5 s "
                    "(RES_TIMEOUT, resolv.conf `timeout:`)",
        doc="a query without a response for this long is unanswered")
    no_answer_attempts: int = tunable(
        2, source="netverdict rules/dns.yaml (attempts >= 2)",
        doc="a query sent this many times without any response is unanswered however little time passed")
    slow_s: float = tunable(
        1.0, source="netverdict rules/dns.yaml (answered with rcode 0 in >= 1000 ms is slow)",
        doc="an answer later than this (from the first attempt) is slow; an unanswered query watched for less "
            "than this is not judged at all")
    tcp_retry_s: float = tunable(
        0.5, source="RFC 7766 §5 / RFC 1035 §4.2.1: a stub retries a TC=1 answer over TCP at once (glibc res_send "
                    "does so immediately); 0.5 s leaves room for a slow path's RTT and TCP handshake",
        doc="a truncated answer with no TCP/53 query for the name this long after it was not retried")
    nxdomain_burst: int = tunable(
        50, source="Zeek community policy `DNS_high_failure_count` (dns_NXDOMAIN_threshold = 50 unique names)",
        doc="distinct non-existent names for one client within the window that make an NXDOMAIN burst")
    nxdomain_window_s: float = tunable(
        300.0, source="same Zeek policy (dns_NXDOMAIN_interval = 5 min)",
        doc="sliding window of the NXDOMAIN burst")


class _Message(NamedTuple):
    """The columns of the dns stream this detector reads, one message."""

    is_response: bool
    ts: float
    frame: int
    src: str
    sport: int
    dst: str
    transport: str
    id: int
    rcode: int
    truncated: bool
    qname: str
    qtype: float | int | None


class _Plain(NamedTuple):
    """Where the plain exchanges of a delivery are: positions of their queries and of their responses."""

    queries: np.ndarray
    responses: np.ndarray


@dataclass
class _Outstanding:
    """A query (all attempts at one client/resolver/name/type) still waiting for its response."""

    first_ts: float
    client_port: int
    transport: str
    attempts: int = 0
    ids: set[int] = field(default_factory=set)
    frames: list[int] = field(default_factory=list)


@dataclass
class _Group:
    """Everything one kind of failure at one resolver accumulated (bounded)."""

    count: int = 0
    confirmed: int = 0
    frames: list[int] = field(default_factory=list)
    names: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)
    flows: dict[FlowRef, None] = field(default_factory=dict)
    rcodes: Counter[str] = field(default_factory=Counter)
    t0: float = math.inf
    t1: float = -math.inf
    worst: float = 0.0
    total: float = 0.0
    attempts: int = 0
    undecoded: int = 0
    peak: int = 0
    burst_clients: set[str] = field(default_factory=set)
    tcp_failures: int = 0

    def add(self, ts: float, frames: Iterable[int], client: str, flow: FlowRef, name: str, *,
            value: float = 0.0, confirmed: bool = True) -> None:
        self.count += 1
        self.confirmed += confirmed
        self.t0, self.t1 = min(self.t0, ts), max(self.t1, ts + value)
        self.worst = max(self.worst, value)
        self.total += value
        self.frames.extend(list(frames)[: MAX_FRAMES - len(self.frames)])
        for counter, key in ((self.names, name), (self.clients, client)):
            if key in counter or len(counter) < MAX_NAMES:
                counter[key] += 1
        if len(self.flows) < MAX_LISTED:
            self.flows[flow] = None


@dataclass(frozen=True)
class _Kind:
    title: str
    remedy: str
    owner: str


KINDS: dict[str, _Kind] = {
    "no-answer": _Kind(
        "DNS queries unanswered",
        "Check that the resolver is up and reachable on UDP and TCP 53 from these clients (`dig @RESOLVER NAME "
        "+short` from the client); look for a firewall or security group dropping port 53 between them, and give "
        "clients a second resolver.",
        LAYER_OWNERS["DNS"]),
    "error-rcode": _Kind(
        "DNS resolver answers SERVFAIL/REFUSED",
        "SERVFAIL: the resolver could not reach the authoritative servers or DNSSEC validation failed - check its "
        "upstream/forwarder reachability and its logs. REFUSED: the resolver will not serve this client "
        "(recursion ACL, wrong resolver configured) - fix the ACL or point the client at its own resolver.",
        LAYER_OWNERS["DNS"]),
    "slow": _Kind(
        "Slow DNS answers",
        "Find where the time goes: resolver load, slow or lossy upstream/forwarder path, cache misses; add a local "
        "cache (systemd-resolved, nscd, NodeLocal DNSCache) and check the resolver's upstream latency.",
        LAYER_OWNERS["DNS"]),
    "truncated": _Kind(
        "Truncated DNS answers never retried over TCP",
        "Allow DNS over TCP/53 between client and resolver (RFC 7766 makes TCP mandatory for DNS); a firewall that "
        "passes only UDP/53 breaks every answer too large for UDP. Also check the EDNS buffer size.",
        f"{LAYER_OWNERS['DNS']} (with the firewall owner for TCP/53)"),
    "nxdomain": _Kind(
        "DNS names do not exist (NXDOMAIN)",
        "Check the names the client asks for: a typo, stale configuration or a deleted record. A burst of many "
        "random-looking names points at malware (DGA) or a mis-set search list / ndots.",
        LAYER_OWNERS["DNS"]),
}


class DnsFailure(Detector):
    id = "dns-failure"
    layer = "DNS"
    title = "DNS resolution failures"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.pending: dict[tuple[str, str, str, int | None], _Outstanding] = {}
        self.truncated: dict[tuple[str, str, str], tuple[float, list[int], int]] = {}
        self.groups: dict[tuple[str, str], _Group] = {}
        self.queries: Counter[str] = Counter()  # resolver -> distinct queries
        self.answered: Counter[str] = Counter()  # resolver -> NOERROR answers to our queries
        self.positive: set[str] = set()  # names some resolver answered with NOERROR
        self.nxdomain: dict[tuple[str, str], dict[str, tuple[float, int, FlowRef]]] = {}
        self.nxdomain_names = 0
        self.tcp53_failed: dict[tuple[str, str], list[int]] = {}
        self.unanswered: list[tuple[tuple[str, str, str, int | None], _Outstanding, float]] = []
        self.decoded: Counter[tuple[str, int, str]] = Counter()  # open UDP flow -> responses decoded on it
        self.undecoded: set[tuple[str, int, str]] = set()  # UDP flows where the resolver sent more than we decoded
        self.responses = 0
        self.last_ts = -math.inf

    # -- streams -----------------------------------------------------------------------------------------------

    def on_dns(self, df: pd.DataFrame) -> None:
        self.last_ts = max(self.last_ts, float(df["ts"].max()))
        response = df["is_response"].to_numpy(dtype=bool)
        server_port = np.where(response, df["sport"].to_numpy(), df["dport"].to_numpy())  # queries go to it
        wanted = (server_port == SERVER_PORT) & (df["opcode"].to_numpy() == OPCODE_QUERY)
        msgs = {name: df[name].to_numpy()[wanted] for name in _Message._fields}
        plain = self._plain_exchanges(msgs)
        self._count_plain(msgs, plain)
        rest = np.ones(len(msgs["ts"]), dtype=bool)
        rest[plain.queries] = rest[plain.responses] = False
        for msg in map(_Message._make, zip(*(msgs[name][rest].tolist() for name in _Message._fields), strict=True)):
            if msg.is_response:
                self._response(msg)
            else:
                self._query(msg)
        self._settle(self.last_ts - max(PENDING_HORIZON_S, self.t.no_answer_s))

    def on_flows(self, df: pd.DataFrame) -> None:
        """Capture end (the latest packet of any flow), TCP/53 connections that never got through, and UDP flows
        whose resolver sent packets we could not decode as responses (IP fragments are not reassembled)."""
        self.last_ts = max(self.last_ts, float(df["last_ts"].max()))
        udp = df.loc[(df["proto"].to_numpy() == 17) & (df["resp_port"].to_numpy() == SERVER_PORT),
                     ["orig", "orig_port", "resp", "pkts_r"]]
        keys = list(zip(udp["orig"].tolist(), udp["orig_port"].tolist(), udp["resp"].tolist(), strict=True))
        decoded = np.array([self.decoded.pop(key, 0) for key in keys], dtype=np.int64)  # forgotten with the flow
        for at in np.flatnonzero(udp["pkts_r"].to_numpy() > decoded).tolist():
            if len(self.undecoded) < MAX_TRACKED:
                self.undecoded.add(keys[at])
        tcp53 = df.loc[(df["proto"].to_numpy() == 6) & (df["resp_port"].to_numpy() == SERVER_PORT),
                       ["orig", "resp", "syn_frame", "rst_frame", "handshake", "state"]]
        failed = tcp53[(tcp53["handshake"] == "syn-only") | (tcp53["state"] == "REJ")]
        for r in failed.itertuples(index=False):
            key = (r.orig, r.resp)
            if key not in self.tcp53_failed and len(self.tcp53_failed) >= MAX_TRACKED:
                continue
            frames = self.tcp53_failed.setdefault(key, [])
            frames.extend(int(f) for f in (r.syn_frame, r.rst_frame) if f >= 0 and len(frames) < MAX_QUERY_FRAMES)

    # -- matching ----------------------------------------------------------------------------------------------

    def _plain_exchanges(self, msgs: dict[str, np.ndarray]) -> _Plain:
        """Where the plain exchanges among `msgs` are. A plain exchange is the only query of its client/resolver/
        name/type in these messages, over UDP and not outstanding from an earlier delivery, followed by the only
        response to it, with the same id, NOERROR, not truncated, within `slow_s`. None is plain when a table
        could reach its cap within these messages: then the order of the messages matters."""
        n = len(msgs["ts"])
        if max(len(self.pending), len(self.decoded)) + n >= MAX_TRACKED or len(self.positive) + n >= MAX_NAMES:
            return _Plain(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        response, src, dst = msgs["is_response"].astype(bool), msgs["src"], msgs["dst"]
        client, qtype = np.where(response, dst, src), msgs["qtype"]
        codes, first = factorize_rows([client, np.where(response, src, dst), msgs["qname"],
                                       np.where(pd.isna(qtype), -1, qtype)])
        at = np.arange(n)
        query_at, response_at = np.full(len(first), -1), np.full(len(first), -1)
        query_at[codes[~response]], response_at[codes[response]] = at[~response], at[response]
        once = ((np.bincount(codes[~response], minlength=len(first)) == 1)
                & (np.bincount(codes[response], minlength=len(first)) == 1) & (response_at > query_at))
        q, r = query_at[once], response_at[once]
        plain = ((msgs["id"][q] == msgs["id"][r]) & (msgs["transport"][q] == "udp") & (msgs["rcode"][r] == NOERROR)
                 & ~msgs["truncated"][r].astype(bool) & (msgs["ts"][r] - msgs["ts"][q] <= self.t.slow_s))
        waiting = {key[0] for key in self.pending}  # clients with a query outstanding from before
        if waiting:
            plain &= ~pd.Series(client[q]).isin(waiting).to_numpy()
        return _Plain(q[plain], r[plain])

    def _count_plain(self, msgs: dict[str, np.ndarray], plain: _Plain) -> None:
        """All that matching the plain exchanges one message at a time (`_query`, `_response`) would do."""
        client, port, resolver = (msgs[name][plain.queries].tolist() for name in ("src", "sport", "dst"))
        self.queries.update(resolver)
        self.answered.update(resolver)
        self.decoded.update(zip(client, port, resolver, strict=True))
        self.positive.update(msgs["qname"][plain.responses].tolist())
        self.responses += len(plain.responses)

    def _query(self, r: _Message) -> None:
        client, resolver, qname = r.src, r.dst, r.qname
        if r.transport == "tcp":
            self.truncated.pop((client, resolver, qname), None)
        key = (client, resolver, qname, _qtype(r.qtype))
        q = self.pending.get(key)
        if q is None:
            if len(self.pending) >= MAX_TRACKED:
                self._settle_one(self.last_ts)
            q = self.pending[key] = _Outstanding(r.ts, r.sport, r.transport)
            self.queries[resolver] += 1
        q.attempts += 1
        if len(q.ids) < MAX_IDS:
            q.ids.add(int(r.id))
        if len(q.frames) < MAX_QUERY_FRAMES:
            q.frames.append(int(r.frame))

    def _response(self, r: _Message) -> None:
        self.responses += 1
        client, resolver, qname = r.dst, r.src, r.qname
        key = (client, resolver, qname, _qtype(r.qtype))
        q = self.pending.get(key)
        if q is None or int(r.id) not in q.ids:
            return  # not an answer to a query we saw: reflection/amplification, or asked before the capture
        del self.pending[key]
        if q.transport == "udp" and len(self.decoded) < MAX_TRACKED:
            self.decoded[(client, q.client_port, resolver)] += 1
        ts, rcode, frame = float(r.ts), int(r.rcode), int(r.frame)
        latency = ts - q.first_ts
        frames = [*q.frames, frame]
        flow = FlowRef(q.transport, client, q.client_port, resolver, SERVER_PORT)
        if rcode in FAILURE_RCODES:
            group = self._group("error-rcode", resolver)
            group.add(q.first_ts, frames, client, flow, qname, value=latency)
            group.rcodes[FAILURE_RCODES[rcode]] += 1
        elif rcode == NOERROR:
            self.answered[resolver] += 1
            if len(self.positive) < MAX_NAMES:
                self.positive.add(qname)
            if latency > self.t.slow_s:
                self._group("slow", resolver).add(q.first_ts, frames, client, flow, qname, value=latency)
        elif rcode == NXDOMAIN:
            names = self.nxdomain.setdefault((client, resolver), {})
            if qname not in names and self.nxdomain_names < MAX_NAMES:
                names[qname] = (q.first_ts, frame, flow)
                self.nxdomain_names += 1
        if r.truncated and q.transport == "udp" and len(self.truncated) < MAX_TRACKED:
            self.truncated[(client, resolver, qname)] = (ts, frames, q.client_port)

    def _group(self, kind: str, resolver: str) -> _Group:
        return self.groups.setdefault((kind, resolver), _Group())

    # -- settling what never got an answer ---------------------------------------------------------------------

    def _settle(self, cutoff: float) -> None:
        """Judge the queries and truncated answers older than `cutoff` (oldest first: dicts keep arrival order)."""
        while self.pending and next(iter(self.pending.values())).first_ts < cutoff:
            self._settle_one(self.last_ts)
        while self.truncated and next(iter(self.truncated.values()))[0] < cutoff:
            key = next(iter(self.truncated))
            self._unretried(key, self.truncated.pop(key), self.last_ts)

    def _settle_one(self, end: float) -> None:
        """Move the oldest outstanding query to the unanswered list; it is judged once its flow record is in."""
        key = next(iter(self.pending))
        q = self.pending.pop(key)
        if len(self.unanswered) < MAX_TRACKED:
            self.unanswered.append((key, q, end - q.first_ts))
        else:
            self._no_answer_add(key, q, end - q.first_ts)

    def _no_answer_add(self, key: tuple[str, str, str, int | None], q: _Outstanding, waited: float) -> None:
        client, resolver, qname, _ = key
        confirmed = q.attempts >= self.t.no_answer_attempts or waited >= self.t.no_answer_s
        if confirmed or waited >= self.t.slow_s:
            group = self._group("no-answer", resolver)
            group.add(q.first_ts, q.frames, client, FlowRef(q.transport, client, q.client_port, resolver, SERVER_PORT),
                      qname, value=waited, confirmed=confirmed)
            group.attempts = max(group.attempts, q.attempts)
            group.undecoded += (client, q.client_port, resolver) in self.undecoded and q.transport == "udp"

    def _unretried(self, key: tuple[str, str, str], item: tuple[float, list[int], int], end: float) -> None:
        client, resolver, qname = key
        ts, frames, port = item
        waited = end - ts
        tcp_frames = self.tcp53_failed.get((client, resolver), [])
        if waited >= self.t.tcp_retry_s or tcp_frames:
            group = self._group("truncated", resolver)
            group.add(ts, [*frames, *tcp_frames], client, FlowRef("udp", client, port, resolver, SERVER_PORT), qname)
            group.tcp_failures += bool(tcp_frames)

    def _nxdomain_groups(self) -> None:
        """Fold NXDOMAIN names into per-resolver groups, leaving out search-list expansions of answered names."""
        for (client, resolver), names in self.nxdomain.items():
            unexplained = sorted(((ts, frame, name, flow) for name, (ts, frame, flow) in names.items()
                                  if not self._search_expansion(name)), key=lambda item: item[:3])
            if not unexplained:
                continue
            group = self._group("nxdomain", resolver)
            for ts, frame, name, flow in unexplained:
                group.add(ts, [frame], client, flow, name)
            peak = _peak([item[0] for item in unexplained], self.t.nxdomain_window_s)
            group.peak = max(group.peak, peak)
            if peak >= self.t.nxdomain_burst:
                group.burst_clients.add(client)

    def _search_expansion(self, name: str) -> bool:
        labels = name.split(".")
        return any(".".join(labels[:i]) in self.positive for i in range(1, len(labels)))

    # -- findings ----------------------------------------------------------------------------------------------

    def finish(self) -> Iterator[Finding]:
        self._settle(math.inf)
        for key, q, waited in self.unanswered:
            self._no_answer_add(key, q, waited)
        self._nxdomain_groups()
        for (kind, resolver), group in sorted(self.groups.items(), key=lambda item: item[0]):
            describe = DESCRIBERS[kind]
            severity, summary, metrics, caveats = describe(self, resolver, group)
            spec = KINDS[kind]
            clients = [c for c, _ in group.clients.most_common(MAX_LISTED)]
            yield Finding(
                detector=self.id, layer=self.layer, severity=severity, title=spec.title, summary=summary,
                evidence=Evidence(frames=sorted(set(group.frames)), flows=list(group.flows),
                                  hosts=[resolver, *clients], window=(group.t0, group.t1),
                                  metrics={"kind": kind, "resolver": resolver, "clients": len(group.clients),
                                           "names": dict(group.names.most_common(MAX_LISTED)), **metrics}),
                filter=frame_filter(group.frames), remedy=spec.remedy, owner=spec.owner, caveats=caveats)

    def _ambiguity(self, group: _Group) -> list[str]:
        caveats = []
        if group.count > group.confirmed:
            caveats.append(f"{group.count - group.confirmed} unanswered queries were sent once, less than "
                           f"{self.t.no_answer_s:g} s before the capture ended: they may simply not have been "
                           "answered yet")
        if not self.responses:
            caveats.append("the capture holds no DNS response at all: if the capture point sees only one direction "
                           "(one-sided SPAN, asymmetric path), the answers may have taken another path")
        return caveats

    def _no_answer(self, resolver: str, g: _Group) -> tuple[Severity, str, dict[str, object], list[str]]:
        solid = g.confirmed - g.undecoded  # undecoded ones may have been answered
        severity = (Severity.LOW if solid <= 0
                    else Severity.HIGH if not self.answered[resolver] else Severity.MEDIUM)
        summary = (f"Resolver {_endpoint(resolver)} left {g.count} of {self.queries[resolver]} queries from "
                   f"{_count(len(g.clients), 'client')} unanswered ({g.confirmed} retried or waiting at least "
                   f"{self.t.no_answer_s:g} s; up to {g.worst:.1f} s and {_count(g.attempts, 'attempt')}); it answered "
                   f"{self.answered[resolver]} successfully. Names: {_names(g)}.")
        metrics = {"unanswered": g.count, "confirmed": g.confirmed, "ambiguous": g.count - g.confirmed,
                   "queries": self.queries[resolver], "answered_noerror": self.answered[resolver],
                   "resolver_sent_undecoded": g.undecoded, "max_wait_s": round(g.worst, 3), "max_attempts": g.attempts,
                   "no_answer_s": self.t.no_answer_s, "no_answer_attempts": self.t.no_answer_attempts}
        caveats = self._ambiguity(g)
        if g.undecoded:
            caveats.append(f"for {g.undecoded} of these queries the resolver did send packets on the same flow that "
                           "could not be decoded as DNS (IP fragments are not reassembled): the answer may be among "
                           "them, lost in part on the way")
        return severity, summary, metrics, caveats

    def _error_rcode(self, resolver: str, g: _Group) -> tuple[Severity, str, dict[str, object], list[str]]:
        severity = Severity.HIGH if not self.answered[resolver] else Severity.MEDIUM
        rcodes = ", ".join(f"{n} {name}" for name, n in g.rcodes.most_common())
        summary = (f"Resolver {_endpoint(resolver)} answered {g.count} of {self.queries[resolver]} queries from "
                   f"{_count(len(g.clients), 'client')} with an error ({rcodes}) and {self.answered[resolver]} "
                   f"successfully. Names: {_names(g)}.")
        metrics = {"failed": g.count, "rcodes": dict(g.rcodes), "queries": self.queries[resolver],
                   "answered_noerror": self.answered[resolver]}
        return severity, summary, metrics, []

    def _slow(self, resolver: str, g: _Group) -> tuple[Severity, str, dict[str, object], list[str]]:
        summary = (f"Resolver {_endpoint(resolver)} took more than {self.t.slow_s:g} s to answer {g.count} of "
                   f"{self.queries[resolver]} queries from {_count(len(g.clients), 'client')} (slowest "
                   f"{g.worst:.2f} s, mean {g.total / g.count:.2f} s). Names: {_names(g)}.")
        metrics = {"slow_answers": g.count, "queries": self.queries[resolver], "max_latency_s": round(g.worst, 3),
                   "mean_latency_s": round(g.total / g.count, 3), "slow_s": self.t.slow_s}
        return Severity.MEDIUM, summary, metrics, []

    def _truncated(self, resolver: str, g: _Group) -> tuple[Severity, str, dict[str, object], list[str]]:
        tcp = (f"; {g.tcp_failures} of them followed by a TCP/53 connection to the resolver that was never answered "
               "or was refused" if g.tcp_failures else "; no TCP/53 query to the resolver followed")
        summary = (f"Resolver {_endpoint(resolver)} sent {g.count} truncated (TC=1) UDP answers to "
                   f"{_count(len(g.clients), 'client')} that never got the full answer over TCP{tcp}. "
                   f"Names: {_names(g)}.")
        metrics = {"truncated_without_tcp_answer": g.count, "tcp53_connections_failed": g.tcp_failures,
                   "tcp_retry_s": self.t.tcp_retry_s}
        return Severity.MEDIUM, summary, metrics, []

    def _nxdomain(self, resolver: str, g: _Group) -> tuple[Severity, str, dict[str, object], list[str]]:
        burst = bool(g.burst_clients)
        peak = (f"up to {g.peak} within {self.t.nxdomain_window_s:g} s, a burst (threshold "
                f"{self.t.nxdomain_burst})" if burst else f"at most {g.peak} within {self.t.nxdomain_window_s:g} s")
        summary = (f"Resolver {_endpoint(resolver)} answered NXDOMAIN (no such name) for "
                   f"{_count(g.count, 'distinct name')} asked by {_count(len(g.clients), 'client')} ({peak}). "
                   f"Names: {_names(g)}.")
        metrics = {"nxdomain_names": g.count, "peak_in_window": g.peak, "window_s": self.t.nxdomain_window_s,
                   "burst_threshold": self.t.nxdomain_burst, "burst_clients": sorted(g.burst_clients)}
        return (Severity.MEDIUM if burst else Severity.INFO), summary, metrics, []


Describer = Callable[[DnsFailure, str, _Group], tuple[Severity, str, dict[str, object], list[str]]]
DESCRIBERS: dict[str, Describer] = {
    "no-answer": DnsFailure._no_answer,
    "error-rcode": DnsFailure._error_rcode,
    "slow": DnsFailure._slow,
    "truncated": DnsFailure._truncated,
    "nxdomain": DnsFailure._nxdomain,
}


def _qtype(value: object) -> int | None:
    """The query type as a hashable int (pandas may hand a missing one over as NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)  # type: ignore[arg-type]


def _peak(times: list[float], window: float) -> int:
    """Most events inside any `window`-long interval of the sorted `times` (two pointers, linear)."""
    best, start = 0, 0
    for end, ts in enumerate(times):
        while ts - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _endpoint(resolver: str) -> str:
    return f"[{resolver}]:{SERVER_PORT}" if ":" in resolver else f"{resolver}:{SERVER_PORT}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _names(g: _Group) -> str:
    shown = [name or "<root>" for name, _ in g.names.most_common(SHOWN_NAMES)]
    more = len(g.names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
