"""SYN flood: half-open handshakes (and unanswered SYNs) piling up on one server:port.

Seed §5 ("L4 — SYN floods and port exhaustion"): a SYN flood fills the server's SYN backlog with half-open
connections (SYN sent, ACK never completes), starving legitimate handshakes; the signature is SYN_RECV piling
up and handshakes failing, the mitigation SYN cookies and backlog tuning. The seed's ownership table puts the
"L4 LB, DDoS/SYN backstop" with the platform / edge team.

The rule follows research-anchors §2.2:

* the unit is the half-open handshake, not the SYN: SYN seen, SYN-ACK seen, no completing ACK (Wireshark
  `tcp.completeness==3`, Zeek history `Sh` without `A`). Counting raw SYNs false-positives on busy healthy servers
  (ntopng #8631), so a server whose handshakes complete never fires however many SYNs it gets. A half-open whose
  server went on to send data, a pure ACK or a FIN is not counted: the server got the ACK (on a path the capture
  does not see) and left SYN_RECV;
* SYNs the server never answered (Zeek `S0`) are a second class: they prove nothing about the server's state, so
  they only count as a flood when they come from many distinct sources (a spoofed or distributed flood the
  server no longer answers, or a capture that sees only the inbound direction). SYNs answered with RST (`REJ`,
  a closed port) are refusals, not half-opens;
* aggregate per server:port over a sliding window as long as a half-open lives in SYN_RECV (Linux
  `tcp_synack_retries`=5: SYN-ACK retried at 1, 3, 7, 15, 31 s, entry dropped at ~63 s), so the count in the
  window is what sat in the SYN queue together, and compare it with the smallest standard SYN queue;
* the server retransmitting its SYN-ACK proves it held the entry in SYN_RECV; half-opens whose SYN-ACK is never
  retransmitted under load hint at SYN cookies (`tcp_syncookies`=1 answers statelessly once the queue overflows);
* source diversity separates a spoofed / distributed flood from one client (or tool) whose handshakes never
  complete. A port scan (one source, one SYN per port) never piles up on a single server:port, so it stays
  silent here.

State stays bounded and the work stays vectorised: per server:port only time-binned counters (see
`WindowedBins`), a capped source list and capped evidence rows, all held as DataFrames that are reduced with one
groupby when enough new rows have piled up; server:port keys beyond a cap are dropped smallest-first and the drop
is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pcapsense.aggregate import Accumulator, KeyIds, Rank, WindowedBins, head_by
from pcapsense.detector import CaptureContext, Detector, tunable
from pcapsense.distinct import DistinctCount
from pcapsense.findings import Evidence, Finding, FlowRef, Severity, frame_filter

MAX_FRAMES = 50  # evidence frames per finding
MAX_FLOWS = 10  # FlowRefs per finding
MAX_SOURCES = 1024  # busiest source addresses remembered by name per server:port (all are counted)
MAX_KEYS = 20_000  # server:port keys tracked at once
BIN_S = 0.1  # time resolution of the sliding window, seconds

REMEDY = (
    "Turn on SYN cookies (net.ipv4.tcp_syncookies=1) so a full SYN queue no longer drops legitimate handshakes, "
    "size the backlog (net.ipv4.tcp_max_syn_backlog, net.core.somaxconn and the listen() backlog), and absorb or "
    "filter the flood at the L4 load balancer / DDoS edge (SYN proxy, per-source SYN rate limits)."
)
OWNER = "Platform / edge team (L4 LB, DDoS/SYN backstop)"


@dataclass(frozen=True)
class Thresholds:
    window_s: float = tunable(
        63.0, source="Linux tcp_synack_retries=5: SYN-ACK retried at 1, 3, 7, 15, 31 s, SYN_RECV entry dropped at "
                     "~63 s (Documentation/networking/ip-sysctl.rst)",
        doc="sliding window; half-opens started within it sat in the SYN queue at the same time")
    min_half_open: int = tunable(
        128, source="Linux tcp_max_syn_backlog minimum of 128 (ip-sysctl.rst) and the pre-5.4 net.core.somaxconn "
                    "default of 128: the smallest standard SYN queue",
        doc="half-open handshakes to one server:port within the window that make a flood")
    min_unanswered: int = tunable(
        128, source="same smallest standard SYN queue (tcp_max_syn_backlog minimum / old somaxconn, 128)",
        doc="SYNs to one server:port the server never answered, within the window, that make a flood "
            "(only together with min_sources)")
    min_sources: int = tunable(
        25, source="pcapsense choice, on the scale of Zeek policy/misc/scan.zeek's 25-host address-scan threshold",
        doc="distinct source addresses that make the flood spoofed or distributed rather than one client; "
            "unanswered SYNs need this many sources to count as a flood at all")


CHANNELS = ("half_open", "unanswered", "refused", "completed", "retransmitted", "synack_retrans")
COLUMNS = ["orig", "orig_port", "resp", "resp_port", "handshake", "history", "state", "synack_retrans", "syn_ts",
           "first_ts", "syn_frame", "synack_frame"]  # the flow-record columns read here
RANKS = {"half_open": Rank((1, 0, 0, 0, 0, 0), ("half_open",)), "unanswered": Rank((0, 1, 0, 0, 0, 0), ("unanswered",))}


def _cap_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Sum per (server:port, source) and keep the MAX_SOURCES busiest sources per server:port (for the top
    source and the hosts named; how many distinct sources there were is counted apart, see DistinctCount)."""
    summed = df.groupby(["kid", "orig"], sort=False, as_index=False)["n"].sum()
    busiest = summed.sort_values(["n", "orig"], ascending=[False, True], kind="stable")  # ties: by address, so
    return busiest.groupby("kid", sort=False).head(MAX_SOURCES)  # equally busy sources never depend on batching


class SynFlood(Detector):
    id = "syn-flood"
    layer = "L4"
    title = "SYN flood (half-open build-up)"
    Thresholds = Thresholds

    def __init__(self, thresholds: Thresholds, context: CaptureContext) -> None:
        super().__init__(thresholds, context)
        self.ids = KeyIds(["resp", "resp_port"])  # server:port
        self.series = WindowedBins(CHANNELS, BIN_S, thresholds.window_s, RANKS, ("half_open", "unanswered"),
                                   MAX_KEYS)
        self.sources = Accumulator(_cap_sources)
        self.distinct = DistinctCount()  # distinct sources per server:port, exact or (past 4096) estimated
        self.evidence = Accumulator(head_by("kid", MAX_FRAMES, ["syn_frame"]))

    def on_flows(self, df: pd.DataFrame) -> None:
        tcp = df.loc[(df["proto"].to_numpy() == 6) & (df["handshake"].to_numpy() != "none"), COLUMNS]
        if not len(tcp):
            return
        handshake = tcp["handshake"].to_numpy()
        half = handshake == "half-open"
        # a server that sent data, a pure ACK or a FIN got the ACK on another path: it left SYN_RECV
        half[half] = ~tcp["history"][half].str.contains("[daf]").to_numpy(dtype=bool)
        syn_only = handshake == "syn-only"
        refused = syn_only & (tcp["state"].to_numpy() == "REJ")
        retrans = tcp["synack_retrans"].to_numpy()
        counts = np.column_stack([half, syn_only & ~refused, refused, handshake == "complete",
                                  half & (retrans > 0), np.where(half, retrans, 0)]).astype(np.int64)
        kid = self.ids.encode(tcp)
        dropped = self.series.add(kid, tcp["syn_ts"].fillna(tcp["first_ts"]).to_numpy(), counts)
        suspect = half | (syn_only & ~refused)
        rows = tcp.loc[suspect, ["orig", "orig_port", "syn_frame", "synack_frame"]].assign(kid=kid[suspect])
        self.sources.add(rows[["kid", "orig"]].assign(n=1))
        self.distinct.add(rows["kid"].to_numpy(), rows["orig"].to_numpy())
        self.evidence.add(rows)
        if len(dropped):
            for acc in (self.sources, self.evidence):
                acc.keep(lambda f: ~np.isin(f["kid"].to_numpy(), dropped))
            self.distinct.forget(dropped.tolist())
            self.ids.forget(dropped)

    def finish(self) -> Iterable[Finding]:
        t = self.t
        sources = self.sources.frame()
        if sources is None or not len(sources):
            return
        half, unanswered = self.series.peaks("half_open"), self.series.peaks("unanswered")
        kids = pd.unique(np.concatenate([half["kid"].to_numpy(), unanswered["kid"].to_numpy()]))
        n_sources = pd.Series([self.distinct.count(int(kid))[0] for kid in kids], index=kids, name="n_sources",
                              dtype=np.int64)
        half = half.join(n_sources, on="kid").fillna({"n_sources": 0})
        unanswered = unanswered.join(n_sources, on="kid").fillna({"n_sources": 0})
        fired_half = half[half["score"] >= t.min_half_open].assign(kind="half_open")
        fired_un = unanswered[(unanswered["score"] >= t.min_unanswered) & (unanswered["n_sources"] >= t.min_sources)]
        fired_un = fired_un.assign(kind="unanswered")
        fired = pd.concat([fired_half, fired_un]).drop_duplicates("kid")  # a half-open flood wins over its SYNs
        # half-open floods first, the largest first; equal ones by server:port, however the capture was batched
        for row in sorted(fired.to_dict("records"),
                          key=lambda r: (r["kind"] != "half_open", -r["score"], self._server_port(int(r["kid"])))):
            yield self._finding(row, sources)

    def _server_port(self, kid: int) -> tuple[str, int]:
        server, port = self.ids.key(kid)
        return str(server), int(port)  # type: ignore[call-overload]

    def _finding(self, row: dict[str, object], sources: pd.DataFrame) -> Finding:
        kid, kind = int(row["kid"]), str(row["kind"])  # type: ignore[call-overload]
        server, port = self._server_port(kid)
        counts = {c: int(row[c]) for c in CHANNELS}  # type: ignore[call-overload]
        totals = self.series.total(kid)
        mine = sources[sources["kid"] == kid]
        n_sources, estimated = self.distinct.count(kid)
        capped = n_sources > len(mine)  # only the busiest sources are kept by name
        top, top_n = str(mine["orig"].iloc[0]), int(mine["n"].iloc[0])
        sources_text = (f"about {n_sources:,} distinct sources (HyperLogLog estimate, ±2 %)" if estimated else
                        f"{n_sources} distinct source{'' if n_sources == 1 else 's'}")
        spoofed = n_sources >= self.t.min_sources
        who = ("a spoofed or distributed SYN flood" if spoofed else
               f"one client or tool (top source {top} with {top_n}) whose handshakes never complete: a "
               "single-source flood, or its ACKs are lost on the way back")
        window = (float(row["start"]), float(row["end"]))  # type: ignore[arg-type]
        span = window[1] - window[0]
        target_text = f"{server}:{port}" if ":" not in server else f"[{server}]:{port}"
        caveats: list[str] = []
        if kind == "half_open":
            head = (f"{target_text} holds {counts['half_open']} half-open handshakes (SYN answered by SYN-ACK, "
                    f"never ACKed) started within {span:.1f} s, from {sources_text} — {who}; ")
            if counts["retransmitted"]:
                proof = (f"{counts['retransmitted']} of them show SYN-ACK retransmissions, so the server held them "
                         "in SYN_RECV (Linux keeps an entry ~63 s)")
            else:
                proof = ("none shows a SYN-ACK retransmission, which points to SYN cookies answering statelessly "
                         "(tcp_syncookies) or a capture that ends within the 1 s initial retransmission timeout")
            summary = head + proof + f"; {counts['completed']} handshakes completed in the same window."
        else:
            summary = (f"{target_text} received {counts['unanswered']} SYNs within {span:.1f} s from {sources_text} "
                       "and answered none of them — a spoofed or distributed SYN flood the server no longer "
                       "answers (its SYN queue is full and SYN cookies are off) or that the capture sees only "
                       f"inbound; {counts['completed']} handshakes completed in the same window.")
            if totals["completed"] == 0 and totals["half_open"] == 0:
                caveats.append(f"No SYN-ACK from {target_text} appears anywhere in the capture: the server may be "
                               "down or the capture may miss its direction, so its SYN queue state is unproven.")
        if self.series.dropped_keys:
            caveats.append(f"{self.series.dropped_keys} quieter server:port keys were dropped to bound memory.")
        evidence = self.evidence.frame()
        rows = evidence[evidence["kid"] == kid]  # type: ignore[index]
        pairs = rows[["syn_frame", "synack_frame"]].to_numpy().ravel()  # each SYN next to its SYN-ACK
        frames = sorted(int(f) for f in pairs[pairs >= 0][:MAX_FRAMES])
        flows = [FlowRef("tcp", str(r.orig), int(r.orig_port), server, port)
                 for r in rows.head(MAX_FLOWS).itertuples(index=False)]
        metrics = {
            f"{kind}_in_window": counts[kind],
            "threshold": self.t.min_half_open if kind == "half_open" else self.t.min_unanswered,
            "window_s": self.t.window_s,
            "distinct_sources": n_sources,
            "distinct_sources_estimated": estimated,
            "sources_capped": capped,
            "top_source": top,
            "top_source_count": top_n,
            "window_counts": counts,
            "capture_counts": totals,
        }
        hosts = [server] if spoofed else [server, *mine["orig"].head(5).astype(str)]
        return Finding(
            detector=self.id,
            layer=self.layer,
            severity=Severity.HIGH,
            title=f"SYN flood on {target_text}" + (" (unanswered SYNs)" if kind == "unanswered" else ""),
            summary=summary,
            evidence=Evidence(frames=frames, flows=flows, hosts=hosts, window=window, metrics=metrics),
            filter=frame_filter(frames),
            remedy=REMEDY,
            owner=OWNER,
            caveats=caveats,
        )
