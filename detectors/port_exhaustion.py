"""Ephemeral-port exhaustion: one client burning through its source ports to one server:port.

Seed §5 ("L4 — SYN floods and port exhaustion"): ephemeral port exhaustion happens when one host opens so many
outbound connections that it runs out of the ~28k default ephemeral ports (or floods the conntrack table / a NAT
gateway), and new connections fail with "cannot assign requested address"; netstat shows huge TIME_WAIT counts.
It is the classic failure of a connection pool that is too large or a service that opens a fresh connection per
request instead of reusing one. The seed's mitigation table prescribes connection reuse, pool sizing and more NAT
IPs; its ownership table gives connection pool sizing to the service team, informed by port/conntrack limits.

The rule follows research-anchors §2.3. Key = (client IP, server IP, server port): that is the 4-tuple space
a client can exhaust, whichever side ends up holding TIME_WAIT.

* ports in use: distinct source ports the client used within one TIME_WAIT (Linux `TCP_TIMEWAIT_LEN` = 60 s,
  include/net/tcp.h) against the ephemeral range (Linux `ip_local_port_range` 32768-60999 = 28,232 ports). A
  connection that reuses a 4-tuple of the same window brings no new port, so the count is new connections minus
  such reuses. The new-connection rate is reported against the sustainable 28,232 / 60 s = ~470 per second;
* 4-tuple reuse inside TIME_WAIT: a SYN on a tuple whose previous connection closed less than 60 s earlier
  (Wireshark `tcp.analysis.reused_ports`, Zeek `premature_connection_reuse`). A client only does this when its
  usable range is used up, so a sustained stream of such reuses is exhaustion even when the range itself is
  narrow (a tuned `ip_local_port_range`, a NAT port block) and its utilisation against the default looks low.
  The peer still holding the old tuple answers the new SYN with a bare ACK of the old connection or a RST — the
  on-wire failures the application sees as refused or slow connects;
* which side closed first (the active closer holds TIME_WAIT) says where netstat shows the TIME_WAIT pile-up.

"cannot assign requested address" (EADDRNOTAVAIL) is returned by connect() on the client and never reaches the
wire, so the summary says so and points at the longest pause in the client's new SYNs inside the window.

State stays bounded and the work stays vectorised: per client -> server:port only time-binned counters (see
`WindowedBins`), a row of scalars and capped evidence rows, reduced with one groupby when enough new rows have
piled up; keys beyond a cap are dropped smallest-first and the drop is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pcapsense.aggregate import Accumulator, KeyIds, Rank, WindowedBins, head_by
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.findings import Evidence, Finding, FlowRef, Severity, frame_filter

MAX_FRAMES = 50  # evidence frames per finding
MAX_FLOWS = 10  # FlowRefs per finding
MAX_KEYS = 20_000  # client -> server:port keys tracked at once
BIN_S = 0.1  # time resolution of the sliding window, seconds (also the resolution of the SYN pause)

REMEDY = (
    "Reuse connections instead of opening one per request (HTTP keep-alive, a client connection pool sized to the "
    "real concurrency), and size pools against the ephemeral range and TIME_WAIT; if the client is a NAT gateway "
    "add NAT IPs. Widening net.ipv4.ip_local_port_range buys headroom, and letting the server close first moves "
    "TIME_WAIT off the client."
)
OWNER = "Service team (connection pool sizing, informed by port/conntrack limits)"

CHANNELS = ("new", "reuse", "rejected", "client_closed_first", "server_closed_first")
RANKS = {"ports": Rank((1, -1, 0, 0, 0), ("new",)), "reuse": Rank((0, 1, 0, 0, 0), ("new",))}
EVIDENCE_REJECTED, EVIDENCE_REUSE, EVIDENCE_PLAIN = 0, 1, 2  # evidence order
COLUMNS = ["orig", "orig_port", "resp", "resp_port", "history", "reuse_gap_s", "prev_closed", "fin_first_dir",
           "syn_ts", "first_ts", "syn_frame", "rst_frame"]  # the flow-record columns read here
STATS = {"port_min": "min", "port_max": "max", "gap_sum": "sum", "gap_min": "min", "reuses": "sum"}


@dataclass(frozen=True)
class Thresholds:
    time_wait_s: float = tunable(
        60.0, source="Linux TCP_TIMEWAIT_LEN = 60 s (include/net/tcp.h)",
        doc="how long the active closer keeps a 4-tuple in TIME_WAIT; also the sliding window length")
    port_range_low: int = tunable(
        32768, source="Linux net.ipv4.ip_local_port_range default 32768 60999 (ip-sysctl.rst)",
        doc="lowest ephemeral port of the client's range")
    port_range_high: int = tunable(
        60999, source="Linux net.ipv4.ip_local_port_range default 32768 60999 (ip-sysctl.rst)",
        doc="highest ephemeral port of the client's range (28,232 ports with the defaults)")
    warn_utilisation: float = tunable(
        0.5, source="research-anchors §2.3 suggested cut-off (>50 % warn); no vendor publishes one",
        doc="share of the ephemeral range used within one TIME_WAIT window that raises a medium finding")
    high_utilisation: float = tunable(
        0.8, source="research-anchors §2.3 suggested cut-off (>80 % bad); no vendor publishes one",
        doc="share of the ephemeral range used within one TIME_WAIT window that raises a high finding")
    min_reuses: int = tunable(
        10, source="pcapsense choice: Wireshark (tcp.analysis.reused_ports) and Zeek (premature_connection_reuse) "
                   "flag every single reuse; ten within one TIME_WAIT window is a pattern, not a one-off",
        doc="4-tuple reuses inside TIME_WAIT within one window that make exhaustion evidence on their own "
            "(high when the peer answers any of them with a bare ACK or RST, else medium)")

    @property
    def range_size(self) -> int:
        return self.port_range_high - self.port_range_low + 1


def _first_answer(history: pd.Series) -> pd.Series:
    """The responder's first history letter (lower case): 'h' for a SYN-ACK, 'a'/'r' for a bare ACK / RST."""
    return history.str.extract(r"([a-z])", expand=False).fillna("")


class PortExhaustion(Detector):
    id = "port-exhaustion"
    layer = "L4"
    title = "Ephemeral port exhaustion"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.ids = KeyIds(["orig", "resp", "resp_port"])  # client -> server:port
        self.series = WindowedBins(CHANNELS, BIN_S, thresholds.time_wait_s, RANKS, ("new",), MAX_KEYS)
        self.stats = Accumulator(lambda df: df.groupby("kid", sort=False, as_index=False).agg(STATS))
        # evidence connections per key: rejected reuses first, then other reuses, then the earliest connections
        self.evidence = Accumulator(head_by("kid", MAX_FRAMES, ["kind", "syn_frame"]))

    def on_flows(self, df: pd.DataFrame) -> None:
        tcp = df.loc[(df["proto"].to_numpy() == 6) & (df["handshake"].to_numpy() != "none"), COLUMNS]
        if not len(tcp):
            return
        gap = tcp["reuse_gap_s"].to_numpy(np.float64)
        reuse = (gap < self.t.time_wait_s) & (tcp["prev_closed"].to_numpy() == 1)  # NaN compares False
        rejected = reuse.copy()  # the history is read for the reuses only
        rejected[reuse] = _first_answer(tcp["history"][reuse]).isin(("a", "r")).to_numpy()
        closer = tcp["fin_first_dir"].to_numpy()
        counts = np.column_stack([np.ones(len(tcp), dtype=bool), reuse, rejected, closer == 0, closer == 1])
        kid = self.ids.encode(tcp)
        dropped = self.series.add(kid, tcp["syn_ts"].fillna(tcp["first_ts"]).to_numpy(), counts.astype(np.int64))
        ports = tcp["orig_port"].to_numpy()
        self.stats.add(pd.DataFrame({"kid": kid, "port_min": ports, "port_max": ports,
                                     "gap_sum": np.where(reuse, gap, 0.0), "gap_min": np.where(reuse, gap, np.inf),
                                     "reuses": reuse.astype(np.int64)}))
        self.evidence.add(pd.DataFrame({
            "kid": kid, "orig_port": ports, "syn_frame": tcp["syn_frame"].to_numpy(),
            "rst_frame": tcp["rst_frame"].to_numpy(),
            "kind": np.select([rejected, reuse], [EVIDENCE_REJECTED, EVIDENCE_REUSE], EVIDENCE_PLAIN)}))
        if len(dropped):
            for acc in (self.stats, self.evidence):
                acc.keep(lambda f: ~np.isin(f["kid"].to_numpy(), dropped))
            self.ids.forget(dropped)

    def _severity(self, utilisation: float, reuses: int, rejected: int) -> Severity | None:
        t = self.t
        levels = (
            (utilisation >= t.high_utilisation, Severity.HIGH),
            (reuses >= t.min_reuses and rejected > 0, Severity.HIGH),
            (utilisation >= t.warn_utilisation, Severity.MEDIUM),
            (reuses >= t.min_reuses, Severity.MEDIUM),
        )
        return next((severity for hit, severity in levels if hit), None)

    def finish(self) -> Iterable[Finding]:
        t = self.t
        ports = self.series.peaks("ports")
        reuse = self.series.peaks("reuse")
        both = ports.merge(reuse, on="kid", suffixes=("", "_r"))
        both["utilisation"] = both["score"].astype(float) / t.range_size
        candidates = both[(both["utilisation"] >= t.warn_utilisation) | (both["score_r"] >= t.min_reuses)]
        for row in candidates.to_dict("records"):
            severity = self._severity(row["utilisation"], int(row["score_r"]), int(row["rejected_r"]))
            if severity is None:
                continue
            suffix = "" if row["utilisation"] >= t.warn_utilisation else "_r"  # the window that made the case
            sums = {c: int(row[c + suffix]) for c in CHANNELS}
            window = (float(row["start" + suffix]), float(row["end" + suffix]))
            yield self._finding(int(row["kid"]), severity, float(row["utilisation"]), sums, window)

    def _finding(self, kid: int, severity: Severity, utilisation: float, c: dict[str, int],
                 window: tuple[float, float]) -> Finding:
        t = self.t
        client_raw, server_raw, port_raw = self.ids.key(kid)
        client, server, port = str(client_raw), str(server_raw), int(port_raw)  # type: ignore[call-overload]
        stats_frame = self.stats.frame()
        stats = stats_frame[stats_frame["kid"] == kid].iloc[0]  # type: ignore[index]
        reuses, port_min, port_max = int(stats["reuses"]), int(stats["port_min"]), int(stats["port_max"])
        ports_in_window = c["new"] - c["reuse"]
        span = max(window[1] - window[0], BIN_S)
        rate = c["new"] / span
        sustainable = t.range_size / t.time_wait_s
        server_text = f"{server}:{port}" if ":" not in server else f"[{server}]:{port}"
        closers = c["client_closed_first"] + c["server_closed_first"]
        holder = "client" if c["client_closed_first"] >= c["server_closed_first"] else "server"
        closed_share = max(c["client_closed_first"], c["server_closed_first"]) / closers if closers else 0.0
        parts = [
            f"{client} opened {c['new']} connections to {server_text} within {span:.1f} s ({rate:.0f}/s against a "
            f"sustainable {sustainable:.0f}/s), using {ports_in_window} distinct source ports — "
            f"{utilisation:.1%} of the {t.port_range_low}-{t.port_range_high} range",
        ]
        if c["reuse"]:
            mean_gap = stats["gap_sum"] / reuses
            used_up = ": the usable range is used up" if c["reuse"] >= t.min_reuses else ""
            parts.append(
                f"{c['reuse']} of them reused a 4-tuple only {mean_gap:.1f} s (min {stats['gap_min']:.1f} s) "
                f"after it closed, inside the {t.time_wait_s:.0f} s TIME_WAIT, cycling through ports "
                f"{port_min}-{port_max} ({port_max - port_min + 1} ports{used_up}), and "
                f"{c['rejected']} drew a bare ACK or RST from the server")
        if closers:
            parts.append(f"the {holder} closes first in {closed_share:.0%} of connections, so the {holder} holds "
                         "TIME_WAIT")
        bins = self.series.rows(kid)
        low, high = round(window[0] / BIN_S), round(window[1] / BIN_S)
        busy = bins.loc[(bins["new"] > 0) & (bins["bin"] >= low) & (bins["bin"] < high), "bin"].to_numpy()
        pause = round((int(np.diff(busy).max()) - 1) * BIN_S, 1) if len(busy) > 1 else 0.0
        parts.append("\"cannot assign requested address\" (EADDRNOTAVAIL) from connect() never reaches the wire"
                     + (f" — the longest pause in new SYNs in the window ({pause:.1f} s) is where to look for it in "
                        "the client's logs" if pause > 0 else ""))
        evidence = self.evidence.frame()
        rows = evidence[evidence["kid"] == kid]  # type: ignore[index]
        # a rejected reuse shows its SYN and the RST that ended it; any other connection its SYN
        pairs = np.column_stack([rows["syn_frame"], np.where(rows["kind"] == EVIDENCE_REJECTED, rows["rst_frame"], -1)])
        frames = sorted(int(f) for f in pairs.ravel()[pairs.ravel() >= 0][:MAX_FRAMES])
        flows = [FlowRef("tcp", client, int(p), server, port) for p in rows["orig_port"].head(MAX_FLOWS)]
        metrics = {
            "new_connections_in_window": c["new"],
            "distinct_ports_in_window": ports_in_window,
            "port_range": [t.port_range_low, t.port_range_high],
            "utilisation": round(utilisation, 4),
            "warn_utilisation": t.warn_utilisation,
            "new_per_s": round(rate, 1),
            "sustainable_per_s": round(sustainable, 1),
            "reuses_in_time_wait": c["reuse"],
            "min_reuses": t.min_reuses,
            "reuses_rejected": c["rejected"],
            "reuse_gap_min_s": round(float(stats["gap_min"]), 3) if reuses else None,
            "reuse_gap_mean_s": round(float(stats["gap_sum"]) / reuses, 3) if reuses else None,
            "observed_ports": [port_min, port_max],
            "client_closed_first": c["client_closed_first"],
            "server_closed_first": c["server_closed_first"],
            "longest_syn_pause_s": pause,
            "window_s": t.time_wait_s,
        }
        caveats = ([f"{self.series.dropped_keys} quieter client -> server:port keys were dropped to bound memory."]
                   if self.series.dropped_keys else [])
        return Finding(
            detector=self.id,
            layer=self.layer,
            severity=severity,
            title=f"Ephemeral port exhaustion {client} -> {server_text}",
            summary="; ".join(parts) + ".",
            evidence=Evidence(frames=frames, flows=flows, hosts=[client, server], window=window, metrics=metrics),
            filter=frame_filter(frames),
            remedy=REMEDY,
            owner=OWNER,
            caveats=caveats,
        )
