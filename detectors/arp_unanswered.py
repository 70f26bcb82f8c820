"""Unanswered ARP / IPv6 neighbour solicitation: a host retries to resolve a neighbour and nobody answers.

Seed §5 ("L2 — ARP failures and broadcast storms"): a missing or stale ARP entry means a host cannot resolve a
neighbour's MAC and packets silently drop on-subnet; in cloud, overlays (VXLAN) and misconfigured security groups
produce the same "can't reach the neighbour" symptom. The ownership table gives L2 to the network / cloud fabric
team. No anchor tool has a verdict for it (research-anchors §4.4); the rule follows §2.4:

* a resolution attempt is a run of requests from one requester (its sender IP) for one target, each at most
  `max_retry_gap_s` after the previous one; a reply from any MAC (ARP reply with that sender IP to that requester,
  or any neighbour advertisement for the target) within the same gap ends it as answered;
* it failed when it got no reply after `min_requests` retries: stacks retry about once a second (RFC 1122
  §2.3.2.1, RFC 4861 RETRANS_TIMER) and give up after 3 (RFC 4861 MAX_MULTICAST_SOLICIT, Linux mcast_solicit);
  copies closer than `min_retry_gap_s` are not retries but duplicates (a loop or a mirror port) — a run made
  mostly of such copies is arp-storm's business, not a resolution failure;
* traps that are unanswered by design are skipped: RFC 5227 probes (sender 0.0.0.0), gratuitous announcements
  (sender IP == target IP) and IPv6 duplicate address detection (source ::);
* a host that asks for many different addresses once each is sweeping (host discovery by a scanner, a monitoring
  or IPAM tool): its unanswered asks are expected, so it gets one informational finding, never a failure. The
  cut is Zeek's address-scan rule (25 distinct hosts within 5 minutes, policy/misc/scan.zeek).

State stays bounded: only resolution attempts active within the last `max_retry_gap_s` are open; per requester
only counters, a capped window of recent unanswered targets and at most 50 evidence frames per finding.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import LAYER_OWNERS, Evidence, Finding, Severity
from pcapsense.flowrecords import mac_text

ARP_REQUEST, ARP_REPLY = 1, 2
ND_SOLICIT, ND_ADVERT = 135, 136
MAX_FRAMES = 50  # evidence frames per finding
MAX_TARGETS = 256  # failed targets remembered per requester; more are counted only
MAX_WINDOW = 4096  # recent unanswered targets per requester kept for the sweep window
MAX_REPLIED_MACS = 65536  # MACs seen receiving a unicast ARP reply (capture vantage check)
LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
SHOWN_TARGETS = 5

REMEDY = (
    "Check that {target} is up and attached to the same VLAN/subnet as {requester}: the switch port and its VLAN, "
    "the target's IP/netmask, host firewalls dropping {kind}, and in cloud the overlay (VXLAN) and security groups "
    "for L2 reachability; then clear the stale neighbour entry on the requester (ip neigh flush / arp -d)."
)
SWEEP_REMEDY = (
    "Confirm that {requester} is an authorised scanner, monitoring or IPAM host; if it is not, treat the sweep as "
    "host discovery (often the first step of lateral movement) and isolate it. The unanswered requests themselves "
    "need no network fix."
)


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = tunable(
        3, source="RFC 4861 §10 MAX_MULTICAST_SOLICIT = 3; Linux net.ipv4.neigh.default.mcast_solicit = 3",
        doc="retries (requests at least min_retry_gap_s apart) without any reply that make a failed resolution")
    min_retry_gap_s: float = tunable(
        0.5, source="RFC 1122 §2.3.2.1: at most one ARP request per second per destination; RFC 4861 "
                    "RETRANS_TIMER 1 s — copies closer than half of that are duplicates, not retries",
        doc="a request counts as a new retry only this long after the previous counted one")
    max_retry_gap_s: float = tunable(
        3.0, source="RFC 4861 RETRANS_TIMER 1000 ms, Linux neigh retrans_time_ms 1000; three timer periods of "
                    "slack for jitter and back-off (pcapsense choice)",
        doc="a longer pause ends a resolution attempt; a reply must come within this long of the last request")
    sweep_targets: int = tunable(
        25, source="Zeek policy/misc/scan.zeek Scan::addr_scan_threshold = 25",
        doc="distinct unanswered targets one requester asks for within sweep_window_s that make it a sweep")
    sweep_window_s: float = tunable(
        300.0, source="Zeek policy/misc/scan.zeek Scan::addr_scan_interval = 5 min",
        doc="sliding window for sweep_targets")


@dataclass(slots=True)
class _Attempt:
    """One resolution attempt: requests from one requester for one target, each within max_retry_gap_s."""

    mac: int
    first_ts: float
    last_ts: float
    retry_ts: float
    retries: int = 1
    copies: int = 1
    unicast: int = 0
    frames: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Requester:
    """What one requester failed to resolve, and how widely it asked."""

    mac: int
    failed: Counter[Hashable] = field(default_factory=Counter)  # target -> unanswered retries
    untracked_failed: int = 0
    attempts: int = 0
    retry_span: float = 0.0  # summed first-to-last-retry time of the failed attempts
    duplicates: int = 0
    unicast: int = 0
    first_ts: float = float("inf")
    last_ts: float = 0.0
    frames: list[int] = field(default_factory=list)
    window: OrderedDict[Hashable, float] = field(default_factory=OrderedDict)
    unanswered: int = 0
    answered: int = 0
    peak_targets: int = 0
    sweep_first: float = float("inf")
    sweep_last: float = 0.0
    sweep_frames: list[int] = field(default_factory=list)

    def fail(self, target: Hashable, a: _Attempt) -> None:
        if target in self.failed or len(self.failed) < MAX_TARGETS:
            self.failed[target] += a.retries
        else:
            self.untracked_failed += 1
        self.attempts += 1
        self.retry_span += a.retry_ts - a.first_ts
        self.duplicates += a.copies - a.retries
        self.unicast += a.unicast
        self.first_ts, self.last_ts = min(self.first_ts, a.first_ts), max(self.last_ts, a.last_ts)
        self.frames.extend(a.frames[:MAX_FRAMES - len(self.frames)])

    def note_unanswered(self, target: Hashable, a: _Attempt, window_s: float, sweep_targets: int) -> None:
        """Slide the window of distinct unanswered targets; a requester past sweep_targets is sweeping."""
        self.unanswered += 1
        self.window.pop(target, None)
        while self.window and next(iter(self.window.values())) < a.first_ts - window_s:
            self.window.popitem(last=False)
        if len(self.window) < MAX_WINDOW:
            self.window[target] = a.first_ts
        self.peak_targets = max(self.peak_targets, len(self.window))
        if len(self.window) >= sweep_targets:
            self.sweep_first = min(self.sweep_first, next(iter(self.window.values())), a.first_ts)
            self.sweep_last = max(self.sweep_last, a.last_ts)
            self.sweep_frames.extend(a.frames[:MAX_FRAMES - len(self.sweep_frames)])

    @property
    def sweeping(self) -> bool:
        return self.sweep_last > 0


@dataclass(frozen=True)
class _Family:
    """How one neighbour-resolution protocol is named, rendered and filtered."""

    kind: str  # what the requests are called
    reply: str  # what an answer is called
    text: Callable[[Hashable], str]  # address key -> printable address
    request_filter: str  # Wireshark filter of this family's requests; {requester} {targets} filled in


ARP = _Family("ARP requests", "ARP reply", lambda a: str(ipaddress.IPv4Address(a)),
              "arp.opcode == 1 && arp.src.proto_ipv4 == {requester}{targets}")
NDP = _Family("neighbour solicitations", "neighbour advertisement", str,
              "icmpv6.type == 135 && ipv6.src == {requester}{targets}")
TARGET_FIELDS = {ARP: "arp.dst.proto_ipv4", NDP: "icmpv6.nd.ns.target_address"}


class _Resolver:
    """Open resolution attempts and per-requester results of one family."""

    def __init__(self, family: _Family, t: Thresholds) -> None:
        self.family, self.t = family, t
        self.open: dict[Hashable, dict[Hashable, _Attempt]] = {}  # target -> requester -> attempt
        self.requesters: dict[Hashable, _Requester] = {}

    def request(self, frame: int, ts: float, requester: Hashable, target: Hashable, mac: int, unicast: bool) -> None:
        by_requester = self.open.setdefault(target, {})
        a = by_requester.get(requester)
        if a is not None and ts - a.last_ts > self.t.max_retry_gap_s:
            self._close(requester, target, by_requester.pop(requester))
            a = None
        if a is None:
            a = by_requester[requester] = _Attempt(mac, ts, ts, ts)
        else:
            a.copies += 1
            if ts - a.retry_ts >= self.t.min_retry_gap_s:
                a.retries, a.retry_ts = a.retries + 1, ts
        a.last_ts = max(a.last_ts, ts)
        a.unicast += unicast
        if len(a.frames) < MAX_FRAMES:
            a.frames.append(frame)

    def reply(self, ts: float, target: Hashable, requester: Hashable | None) -> None:
        """A reply from `target`; to one requester, or (None) to everyone asking for it."""
        by_requester = self.open.get(target, {})
        for who in [requester] if requester is not None else list(by_requester):
            a = by_requester.get(who)
            if a is not None and ts - a.last_ts <= self.t.max_retry_gap_s:
                del by_requester[who]
                self._requester(who, a.mac).answered += 1

    def expire(self, now: float) -> None:
        """Close attempts that can no longer be retried or answered (everything, at the end of the capture)."""
        for target, by_requester in list(self.open.items()):
            for who, a in list(by_requester.items()):
                if now - a.last_ts > self.t.max_retry_gap_s:
                    self._close(who, target, by_requester.pop(who))
            if not by_requester:
                del self.open[target]

    def _requester(self, who: Hashable, mac: int) -> _Requester:
        return self.requesters.setdefault(who, _Requester(mac))

    def _close(self, who: Hashable, target: Hashable, a: _Attempt) -> None:
        r = self._requester(who, a.mac)
        r.note_unanswered(target, a, self.t.sweep_window_s, self.t.sweep_targets)
        if a.retries >= self.t.min_requests and a.copies - a.retries <= a.retries:
            r.fail(target, a)


class ArpUnanswered(Detector):
    id = "arp-unanswered"
    layer = "L2"
    title = "Neighbour resolution failed (unanswered ARP / IPv6 neighbour solicitation)"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.arp = _Resolver(ARP, thresholds)
        self.ndp = _Resolver(NDP, thresholds)
        self.replied_macs: set[int] = set()

    def on_arp(self, df: pd.DataFrame) -> None:
        """Requests (minus probes and announcements) open or extend attempts; replies answer them."""
        rows = df[((df["op"] == ARP_REQUEST) & (df["spa"] != 0) & (df["spa"] != df["tpa"])) | (df["op"] == ARP_REPLY)]
        for frame, ts, op, sha, spa, tha, tpa, dst in zip(
                rows["frame"].tolist(), rows["ts"].tolist(), rows["op"].tolist(), rows["sha"].tolist(),
                rows["spa"].tolist(), rows["tha"].tolist(), rows["tpa"].tolist(), rows["dst_mac"].tolist(),
                strict=True):
            if op == ARP_REQUEST:
                self.arp.request(frame, ts, spa, tpa, sha, 0 < dst != BROADCAST_MAC)  # 0: link has no destination MAC
            else:
                self.arp.reply(ts, spa, tpa)
                if dst != BROADCAST_MAC and len(self.replied_macs) < MAX_REPLIED_MACS:
                    self.replied_macs.add(tha)
        if len(df):
            self.arp.expire(float(df["ts"].max()))

    def on_ndp(self, df: pd.DataFrame) -> None:
        """Solicitations (minus DAD from ::) open or extend attempts; any advertisement for the target answers."""
        rows = df[(df["type"] == ND_ADVERT) | ((df["type"] == ND_SOLICIT) & (df["src"] != "::"))]
        for frame, ts, kind, src, target, mac in zip(
                rows["frame"].tolist(), rows["ts"].tolist(), rows["type"].tolist(), rows["src"].tolist(),
                rows["target"].tolist(), rows["src_mac"].tolist(), strict=True):
            if kind == ND_SOLICIT:
                self.ndp.request(frame, ts, src, target, mac, False)
            else:
                self.ndp.reply(ts, target, None)
        if len(df):
            self.ndp.expire(float(df["ts"].max()))

    def finish(self) -> Iterable[Finding]:
        for resolver in (self.arp, self.ndp):
            resolver.expire(float("inf"))
            # in the order the requesters first asked (ties by address), however the capture was batched
            for who, r in sorted(resolver.requesters.items(), key=lambda item: (item[1].first_ts, str(item[0]))):
                if r.failed:
                    yield self._failure(resolver.family, who, r)
                if r.sweeping:
                    yield self._sweep(resolver.family, who, r)

    # -- findings ---------------------------------------------------------------------------------------------

    def _failure(self, fam: _Family, who: Hashable, r: _Requester) -> Finding:
        requester, mac = fam.text(who), mac_text(r.mac)
        targets = [fam.text(t) for t, _ in r.failed.most_common()]
        shown = ", ".join(f"{fam.text(t)} ({n}x)" for t, n in r.failed.most_common(SHOWN_TARGETS))
        more = len(r.failed) + r.untracked_failed - SHOWN_TARGETS
        retries = sum(r.failed.values())
        span = r.last_ts - r.first_ts
        what = (f"{targets[0]}" if len(r.failed) == 1 and not r.untracked_failed
                else f"{len(r.failed) + r.untracked_failed} neighbours")
        hints = [text for cond, text in (
            (fam is ARP and ipaddress.IPv4Address(who) in LINK_LOCAL_V4,
             f"{requester} uses a link-local (169.254/16) address — DHCP failed or an address conflict made it fall "
             "back, and neighbours on the real subnet may ignore a requester outside it"),
            (r.unicast >= retries,
             f"the requests were unicast to the cached MAC: {requester} is re-confirming an entry it had, so the "
             "neighbour went away (host down, moved or re-addressed)"),
        ) if cond]
        asked = targets[0] if what == targets[0] else f"{what}: {shown}{f' and {more} more' if more > 0 else ''}"
        tries = f"{r.attempts} attempts" if r.attempts > 1 else "one attempt"
        pace = f"one every {r.retry_span / (retries - r.attempts):.1f} s"
        summary = (f"{requester} ({mac}) sent {retries} {fam.kind} for {asked} in {tries} over {span:.1f} s "
                   f"({pace}) and no "
                   f"{fam.reply} came back from any MAC: neighbour resolution failed, so its traffic to "
                   f"{'that address' if len(r.failed) == 1 else 'those addresses'} is dropped on-link"
                   f"{''.join(f'; {h}' for h in hints)}.")
        caveats = []
        if fam is ARP and r.mac not in self.replied_macs:
            caveats.append(f"No unicast ARP reply to {mac} appears anywhere in the capture: if the capture point "
                           f"cannot see {requester}'s unicast traffic (a SPAN of another port, a third host's NIC), "
                           "replies may have been sent and missed.")
        if r.duplicates:
            caveats.append(f"{r.duplicates} copies arrived less than {self.t.min_retry_gap_s} s after a retry — "
                           "faster than any resolver retries; they look like loop or mirror duplicates (see "
                           "arp-storm) and were not counted.")
        if r.sweeping:
            caveats.append(f"{requester} is also sweeping ({r.peak_targets} distinct unanswered targets within "
                           f"{self.t.sweep_window_s:.0f} s); these retries may be a scanner's.")
        target_list = ", ".join(targets[:MAX_TARGETS])  # tshark 4.0 cannot split addresses on spaces alone
        return Finding(
            detector=self.id, layer=self.layer, severity=Severity.MEDIUM,
            title=f"Unanswered {fam.kind}: {requester} cannot resolve {what}",
            summary=summary,
            evidence=Evidence(frames=r.frames, hosts=[requester, *targets[:SHOWN_TARGETS]],
                              window=(r.first_ts, r.last_ts),
                              metrics={"requester": requester, "requester_mac": mac, "retries": retries,
                                       "attempts": r.attempts, "targets": {fam.text(t): n for t, n in
                                                                           r.failed.most_common(SHOWN_TARGETS)},
                                       "failed_targets": len(r.failed) + r.untracked_failed,
                                       "unicast_requests": r.unicast, "duplicate_copies": r.duplicates,
                                       "span_s": round(span, 3)}),
            filter=fam.request_filter.format(requester=requester,
                                             targets=f" && {TARGET_FIELDS[fam]} in {{{target_list}}}"),
            remedy=REMEDY.format(target=", ".join(targets[:SHOWN_TARGETS]), requester=requester,
                                 kind=fam.kind),
            owner=LAYER_OWNERS["L2"], caveats=caveats,
        )

    def _sweep(self, fam: _Family, who: Hashable, r: _Requester) -> Finding:
        requester, mac = fam.text(who), mac_text(r.mac)
        span = r.sweep_last - r.sweep_first
        summary = (f"{requester} ({mac}) swept the segment: up to {r.peak_targets} distinct addresses asked "
                   f"within {self.t.sweep_window_s:.0f} s without an answer ({r.unanswered} unanswered and "
                   f"{r.answered} answered asks in all, over {span:.0f} s). This is host discovery (a scanner, "
                   "monitoring or IPAM tool), not a resolution failure: unanswered requests from it are expected.")
        return Finding(
            detector=self.id, layer=self.layer, severity=Severity.INFO,
            title=f"{fam.kind[0].upper()}{fam.kind[1:]} sweep from {requester}",
            summary=summary,
            evidence=Evidence(frames=r.sweep_frames, hosts=[requester], window=(r.sweep_first, r.sweep_last),
                              metrics={"requester": requester, "requester_mac": mac,
                                       "peak_targets_in_window": r.peak_targets, "window_s": self.t.sweep_window_s,
                                       "unanswered_asks": r.unanswered, "answered_asks": r.answered}),
            filter=fam.request_filter.format(requester=requester, targets=""),
            remedy=SWEEP_REMEDY.format(requester=requester), owner=LAYER_OWNERS["L2"],
        )
