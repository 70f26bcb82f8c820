"""ARP / broadcast storm: a flood of frames that every host on the L2 domain must process, and the loop behind it.

Seed §5 ("L2 — ARP failures and broadcast storms"): a broadcast storm, often a switching loop without spanning-tree
protection or a misbehaving NIC, floods the segment until the whole L2 domain grinds to a halt; everything on one
subnet degrades at once, whatever the application. The seed's mitigation table prescribes STP/loop-guard and storm
control; its ownership table gives L2 to the network / cloud fabric team.

The rule (research-anchors §2.4):

* rate: Wireshark's ARP-storm expert (`arp.packet-storm-detected`) fires when 30 packets arrive within 100 ms
  (prefs `arp.detect_storm_number_of_packets` = 30, `arp.detect_storm_period` = 100). We apply it to what floods
  the domain: every broadcast frame plus every ARP request (unicast ARP replies reach one host and are left out);
* a storm is the span covered by such dense windows, windows less than `merge_gap_s` apart being one storm; storms
  with the same verdict and the same dominant source (a flapping loop, a scanner on a timer) make one finding;
* the loop signature: a loop recirculates the same frames within milliseconds, so most frames of the storm repeat,
  byte for byte (the core's `frame_hash` over the first 64 bytes), a frame seen less than one storm period earlier
  — high severity. Hosts re-send the same broadcast only after a retry timer (ARP 1 s, NetBIOS 250 ms), and a
  mirror port doubles a frame once, so neither reaches the cut;
* without that signature a dense burst is only a storm when one source sends most of it (a misbehaving NIC, a
  scanner): a large healthy LAN where hundreds of hosts each ARP once also produces dense windows, but spread
  over hundreds of sources, and must stay silent.

The ARP stream and the broadcast stream are merged in capture order: the engine hands a batch's ARP rows before
its broadcast rows, so unicast ARP requests wait in `pending` until the broadcast rows of the same batch (or the
next ARP batch, or the end) arrive. State stays bounded: a carry of the last period's events for the sliding
window, per storm only counters, capped source and frame-hash tables and at most 50 evidence frames, and once a
storm ends only the largest of its group is kept.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import LAYER_OWNERS, Evidence, Finding, Severity
from pcapsense.flowrecords import mac_text

ETH_ARP = 0x0806
ARP_REQUEST = 1
MAX_FRAMES = 50  # evidence frames per storm
MAX_SOURCES = 4096  # distinct source MACs counted per storm; more are pooled as untracked
MAX_HASHES = 65536  # distinct frames counted per storm; more are counted as distinct without tracking
MAX_MAC_IPS = 65536  # MAC -> IPv4 bindings learned from ARP, to name sources
TOP_SOURCES = 5
MAX_RANGES = 20  # storm frame ranges one finding's filter lists
SUSTAIN_S = 1.0  # switch storm control meters per 1 s interval: a storm shorter than this is judged over 1 s
COLUMNS = ["frame", "ts", "src_mac", "frame_hash", "is_arp"]
# (loop signature, mean rate over at least SUSTAIN_S at the storm rate) -> severity: a loop recirculates without
# bound; without one, the load is a single sender's, a storm when it keeps the storm rate up for a second or more
# and a burst otherwise.
SEVERITY = {(True, True): Severity.HIGH, (True, False): Severity.HIGH,
            (False, True): Severity.MEDIUM, (False, False): Severity.LOW}

REMEDY = (
    "Find and break the loop or silence the flooding source: check spanning-tree state and topology-change counters "
    "on the switches of this segment, enable BPDU guard / loop guard on edge ports and storm control (broadcast "
    "pps or percent limits) on access ports; if one source dominates, shut or isolate its switch port and check "
    "that NIC or host (a scanner, a driver in a send loop)."
)


@dataclass(frozen=True)
class Thresholds:
    storm_packets: int = tunable(
        30, source="Wireshark ARP expert pref arp.detect_storm_number_of_packets default 30",
        doc="frames (broadcasts and ARP requests) that must fall within one storm period")
    storm_period_ms: int = tunable(
        100, source="Wireshark ARP expert pref arp.detect_storm_period default 100 ms",
        doc="length of the sliding window in which storm_packets frames make a storm")
    merge_gap_s: float = tunable(
        1.0, source="pcapsense choice: a flapping loop pauses for well under a second between bursts",
        doc="dense windows separated by less than this are reported as one storm")
    loop_duplicate_share: float = tunable(
        0.75, source="pcapsense choice: a frame mirrored from both directions of a SPAN port is seen twice (share "
                     "0.5); a loop repeats it without bound, so the cut sits at 4 copies per frame on average",
        doc="share of the storm's frames that repeat a frame seen less than one storm period earlier byte for "
            "byte (a loop recirculates within milliseconds; hosts retry after 250 ms or more), at or above which "
            "the storm carries the switching-loop signature")
    source_share: float = tunable(
        0.5, source="pcapsense choice after ipazc/bcastInspector's per-source broadcast rate rule (research-anchors "
                    "§2.4): a storm without loop copies needs one dominant source",
        doc="share of the storm's frames one source MAC must send for a storm without the loop signature")


@dataclass(slots=True)
class _Storm:
    """One storm: counters over the frames inside dense windows."""

    start: float
    end: float
    first_frame: int
    repeat_window: float  # a copy of a frame seen less than this long before is a loop copy
    last_frame: int = 0
    frames: int = 0
    arp: int = 0
    peak: int = 0
    sources: Counter[int] = field(default_factory=Counter)
    untracked_sources: int = 0
    copies: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)
    repeats: int = 0
    untracked_frames: int = 0
    evidence: list[int] = field(default_factory=list)

    def add(self, part: pd.DataFrame) -> None:
        """Fold a run of storm frames (in capture order) into the counters."""
        frames = part["frame"].to_numpy()
        self.end = max(self.end, float(part["ts"].max()))
        self.last_frame = int(frames[-1])
        self.frames += len(part)
        self.arp += int(part["is_arp"].sum())
        self.peak = max(self.peak, int(part["peak"].max()))
        self.evidence.extend(frames[:MAX_FRAMES - len(self.evidence)].tolist())
        macs, counts = np.unique(part["src_mac"].to_numpy(), return_counts=True)
        for mac, n in zip(macs.tolist(), counts.tolist(), strict=True):
            if mac in self.sources or len(self.sources) < MAX_SOURCES:
                self.sources[mac] += n
            else:
                self.untracked_sources += n
        self._count_copies(part["frame_hash"].to_numpy(), part["ts"].to_numpy())

    def _count_copies(self, hashes: np.ndarray, ts: np.ndarray) -> None:
        """Count frames per hash, and the fast repeats: same bytes again within `repeat_window`."""
        order = np.lexsort((ts, hashes))
        hashes, ts = hashes[order], ts[order]
        same = np.concatenate([[False], hashes[1:] == hashes[:-1]])
        prev = np.concatenate([[np.nan], ts[:-1]])
        prev[~same] = [self.last_seen.get(h, np.nan) for h in hashes[~same].tolist()]
        self.repeats += int(np.count_nonzero(ts - prev < self.repeat_window))
        last = np.concatenate([~same[1:], [True]])
        starts = np.flatnonzero(~same)
        counts = np.diff(np.concatenate([starts, [len(hashes)]]))
        for h, n, t in zip(hashes[last].tolist(), counts.tolist(), ts[last].tolist(), strict=True):
            if h in self.copies or len(self.copies) < MAX_HASHES:
                self.copies[h] = self.copies.get(h, 0) + n
                self.last_seen[h] = t
            else:
                self.untracked_frames += n

    @property
    def distinct(self) -> int:
        return len(self.copies) + self.untracked_frames

    @property
    def duplicate_share(self) -> float:
        return self.repeats / self.frames


@dataclass(slots=True)
class _Group:
    """Storms with the same verdict (loop or not) and the same dominant source: one finding."""

    largest: _Storm
    episodes: int = 0
    frames: int = 0
    first: float = float("inf")
    last: float = 0.0
    sustained: bool = False
    ranges: list[tuple[int, int]] = field(default_factory=list)  # frame ranges of the first MAX_RANGES storms

    def add(self, storm: _Storm, sustained: bool) -> None:
        if storm.frames > self.largest.frames:
            self.largest = storm
        self.episodes += 1
        self.frames += storm.frames
        self.first, self.last = min(self.first, storm.start), max(self.last, storm.end)
        self.sustained |= sustained
        if len(self.ranges) < MAX_RANGES:
            self.ranges.append((storm.first_frame, storm.last_frame))


def _ipv4(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


class ArpStorm(Detector):
    id = "arp-storm"
    layer = "L2"
    title = "ARP / broadcast storm (switching loop or flooding source)"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.pending: pd.DataFrame | None = None
        self.carry: pd.DataFrame | None = None  # recent frames: the window's context and the undecided tail
        self.groups: dict[tuple[bool, int], _Group] = {}  # (loop signature, dominant source MAC) -> storms
        self.current: _Storm | None = None
        self.mac_ip: dict[int, int] = {}

    # -- streams ----------------------------------------------------------------------------------------------

    def on_arp(self, df: pd.DataFrame) -> None:
        """Learn MAC -> IP bindings; hold unicast ARP requests (broadcast ones come with the broadcast stream)."""
        self._flush()
        known = df[df["spa"] != 0].drop_duplicates("sha", keep="last")
        for mac, ip in zip(known["sha"].tolist(), known["spa"].tolist(), strict=True):
            if mac in self.mac_ip or len(self.mac_ip) < MAX_MAC_IPS:
                self.mac_ip[mac] = ip
        unicast = df[(df["op"] == ARP_REQUEST) & (df["dst_mac"] != BROADCAST_MAC)]
        self.pending = unicast.assign(is_arp=True)[COLUMNS]

    def on_broadcast(self, df: pd.DataFrame) -> None:
        events = df.assign(is_arp=df["net"] == ETH_ARP)[COLUMNS]
        if self.pending is not None and len(self.pending):
            events = pd.concat([self.pending, events]).sort_values("frame", kind="stable")
        self.pending = None
        self._feed(events)

    def _flush(self) -> None:
        if self.pending is not None and len(self.pending):
            self._feed(self.pending)
        self.pending = None

    # -- sliding window ---------------------------------------------------------------------------------------

    def _feed(self, events: pd.DataFrame) -> None:
        """Mark frames inside dense windows, commit the frames no future window can reach, carry the rest."""
        fresh_rows = events.assign(member=False, peak=0, done=False)
        n_old = 0 if self.carry is None else len(self.carry)
        seq = pd.concat([self.carry, fresh_rows], ignore_index=True) if n_old else fresh_rows.reset_index(drop=True)
        ts = np.maximum.accumulate(seq["ts"].to_numpy())  # tolerate slightly unordered multi-interface captures
        n, k, period = len(seq), self.t.storm_packets, self.t.storm_period_ms / 1000
        new = np.arange(max(n_old, k - 1), n)
        hot = new[ts[new] - ts[new - (k - 1)] < period]
        cover = np.zeros(n + 1, dtype=np.int64)
        np.add.at(cover, hot - (k - 1), 1)
        np.add.at(cover, hot + 1, -1)
        member = seq["member"].to_numpy(dtype=bool) | (np.cumsum(cover)[:n] > 0)
        peak = seq["peak"].to_numpy(dtype=np.int64).copy()
        peak[hot] = hot - np.searchsorted(ts, ts[hot] - period, side="right") + 1
        seq = seq.assign(member=member, peak=peak)
        decided = max(n - (k - 1), 0)
        fresh = ~seq["done"].to_numpy(dtype=bool)
        fresh[decided:] = False
        self._commit(seq[fresh & member])
        keep = min(decided, int(np.searchsorted(ts, ts[-1] - period, side="right")))
        self.carry = seq.iloc[keep:].assign(done=lambda d: d["done"] | (np.arange(len(d)) + keep < decided))

    def _commit(self, members: pd.DataFrame) -> None:
        """Group storm frames into storms: a gap longer than merge_gap_s starts a new one."""
        if not len(members):
            return
        ts = members["ts"].to_numpy()
        prev = np.concatenate([[self.current.end if self.current else -np.inf], ts[:-1]])
        starts = np.flatnonzero(ts - prev > self.t.merge_gap_s)
        edges = np.union1d([0], starts)
        storm = self.current
        for lo, hi, new in zip(edges, np.append(edges[1:], len(ts)), np.isin(edges, starts), strict=True):
            part = members.iloc[lo:hi]
            if new or storm is None:
                self._close()
                storm = self.current = _Storm(float(ts[lo]), float(ts[lo]), int(part["frame"].iloc[0]),
                                              self.t.storm_period_ms / 1000)
            storm.add(part)

    def _close(self) -> None:
        """Judge the finished storm and fold it into its group; only the largest storm of a group is kept whole."""
        storm, self.current = self.current, None
        if storm is None:
            return
        loop = storm.duplicate_share >= self.t.loop_duplicate_share
        top_mac, top_n = storm.sources.most_common(1)[0]
        if not (loop or top_n / storm.frames >= self.t.source_share):
            return
        period_s = self.t.storm_period_ms / 1000
        sustained = storm.frames / max(storm.end - storm.start, SUSTAIN_S) >= self.t.storm_packets / period_s
        group = self.groups.setdefault((loop, top_mac), _Group(storm))
        group.add(storm, sustained)

    # -- findings ---------------------------------------------------------------------------------------------

    def finish(self) -> Iterable[Finding]:
        self._flush()
        if self.carry is not None:  # no frame follows: the undecided tail is decided as it stands
            carry = self.carry
            self._commit(carry[~carry["done"].to_numpy(dtype=bool) & carry["member"].to_numpy(dtype=bool)])
        self._close()
        for (loop, _), group in self.groups.items():
            yield self._finding(group, loop)

    def _source_text(self, mac: int) -> str:
        return f"{self._host(mac)} ({mac_text(mac)})" if mac in self.mac_ip else mac_text(mac)

    def _host(self, mac: int) -> str:
        ip = self.mac_ip.get(mac)
        return _ipv4(ip) if ip is not None else mac_text(mac)

    def _finding(self, g: _Group, loop: bool) -> Finding:
        s = g.largest
        top = s.sources.most_common(TOP_SOURCES)
        top_mac, top_n = top[0]
        top_share = top_n / s.frames
        duration = s.end - s.start
        period_s = self.t.storm_period_ms / 1000
        metrics = {
            "frames": s.frames, "arp_frames": s.arp, "duration_s": round(duration, 3),
            "peak_per_period": s.peak, "period_ms": self.t.storm_period_ms,
            "peak_rate_pps": round(s.peak / period_s), "mean_rate_pps": round(s.frames / max(duration, period_s)),
            "distinct_frames": s.distinct, "duplicate_share": round(s.duplicate_share, 3),
            "max_copies_of_one_frame": max(s.copies.values()), "top_source_share": round(top_share, 3),
            "top_sources": [{"mac": mac_text(mac), "ip": _ipv4(self.mac_ip[mac]) if mac in self.mac_ip else None,
                             "frames": n} for mac, n in top],
            "episodes": g.episodes, "frames_all_episodes": g.frames,
        }
        kind = "storm" if g.sustained else "burst"
        what = (f"{s.frames} broadcast/ARP-request frames ({s.arp} ARP) in {duration:.2f} s, peak {s.peak} per "
                f"{self.t.storm_period_ms} ms (~{metrics['peak_rate_pps']}/s), mean {metrics['mean_rate_pps']}/s")
        source = f"top source {self._source_text(top_mac)} sent {top_n} ({top_share:.0%})"
        again = (f" The largest of {g.episodes} such episodes ({g.frames} frames) between {g.first:.3f} and "
                 f"{g.last:.3f}." if g.episodes > 1 else "")
        if loop:
            title = "Broadcast storm with switching-loop signature"
            summary = (f"Switching-loop signature: {what}; {s.duplicate_share:.1%} of them repeat one of only "
                       f"{s.distinct} distinct frames within {self.t.storm_period_ms} ms (one seen "
                       f"{metrics['max_copies_of_one_frame']} times); {source}.{again}")
        else:
            title = f"ARP / broadcast {kind} from one dominant source"
            summary = (f"ARP/broadcast {kind}: {what}; {source}; only {s.duplicate_share:.0%} fast repeats, so a "
                       f"scanner or a misbehaving sender rather than a loop.{again}")
        caveats = []
        if loop and self.context.interfaces > 1:
            caveats.append(f"The capture has {self.context.interfaces} interfaces: a frame captured on several of "
                           "them counts once per interface, which inflates the duplicate share.")
        if s.untracked_frames or s.untracked_sources:
            caveats.append("The storm had more distinct frames or sources than pcapsense tracks; the duplicate "
                           "share is a lower bound and the source shares are approximate.")
        if g.episodes > len(g.ranges):
            caveats.append(f"The filter selects the first {len(g.ranges)} of {g.episodes} episodes.")
        ranges = " || ".join(f"(frame.number >= {lo} && frame.number <= {hi})" for lo, hi in g.ranges)
        return Finding(
            detector=self.id, layer=self.layer, severity=SEVERITY[loop, g.sustained],
            title=title, summary=summary,
            evidence=Evidence(frames=s.evidence, hosts=[self._host(mac) for mac, _ in top],
                              window=(g.first, g.last), metrics=metrics),
            filter=f"(arp.opcode == 1 || eth.dst == ff:ff:ff:ff:ff:ff) && ({ranges})",
            remedy=REMEDY, owner=LAYER_OWNERS["L2"], caveats=caveats,
        )
