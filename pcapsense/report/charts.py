"""Plotly figures per layer, drawn from the timeline's series and from finding metrics.

Each figure is chosen to make one failure signature of the seed visible, and to show what healthy looks like
when the layer is clean (clean is a result): ARP and broadcast rates with recirculated duplicates (a loop),
segment sizes with the retransmissions that were never ACKed and the implied path MTU (a PMTUD black hole),
half-open handshakes per server:port (a SYN flood), source ports against the ephemeral range (port
exhaustion), DNS response times and rcodes, TLS handshake outcomes, and HTTP header-completion times
(slowloris). The windows of the layer's findings are shaded on its time charts.

Every text that reaches a figure (names, hover text, categories, annotations) goes through `label` or `esc`,
because plotly.js renders a subset of HTML in all of them; numbers are passed as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from pcapsense.findings import Finding
from pcapsense.report.safety import esc, label

BLUE, GREEN, RED, ORANGE = "#2563eb", "#16a34a", "#dc2626", "#ea580c"
PURPLE, GREY, TEAL = "#7c3aed", "#6b7280", "#0d9488"
SERVER_COLOURS = (BLUE, ORANGE, PURPLE, TEAL, GREY)
WINDOW_FILL = "rgba(220, 38, 38, 0.07)"
WINDOW_SHADE_SHARE = 0.8  # a finding window longer than this share of the capture is not shaded
DISPLAY_BINS = 400  # time bins drawn at most; neighbouring bins are merged beyond
FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
TIME_AXIS = "seconds since the first packet"
EPHEMERAL_RANGES = (  # (low, high, name): where an OS picks client source ports
    (32768, 60999, "Linux default ephemeral range 32768-60999"),
    (49152, 65535, "IANA / Windows ephemeral range 49152-65535"),
)
RCODE_COLOURS = {"NOERROR": GREEN, "NXDOMAIN": ORANGE, "no answer": GREY}
TLS_COLOURS = {"ServerHello": GREEN, "fatal alert": RED, "reset": ORANGE, "no answer": GREY}
TOP_SNI = 10  # server names in the outcomes-by-SNI chart
CAPTION_LIMIT = 1200  # characters of a caption (they quote alert names and endpoints)
HEADER = 40  # IPv4 + TCP header bytes without options: path MTU = largest segment + HEADER


@dataclass(frozen=True)
class Chart:
    """One figure of a page: title and caption as escaped HTML, and the figure as plotly JSON (text escaped)."""

    key: str
    title: str
    caption: str
    json: str


class _Context:
    """What every chart of one report shares: the series, the time base and the findings.

    The timeline keeps up to 2000 bins; a chart draws at most DISPLAY_BINS, merging `factor` neighbours (counts
    add, peaks take the larger), because a 10-second capture in 10 ms bins is noise to the eye."""

    def __init__(self, series: dict[str, Any], findings: list[Finding]) -> None:
        self.s = series
        self.findings = findings
        self.t0 = series.get("t0") or 0.0
        bins = int(series.get("bins") or 0)
        self.factor = max(1, -(-bins // DISPLAY_BINS))
        self.bin_s = float(series.get("bin_s") or 1.0) * self.factor
        self.x = [round(i * self.bin_s, 6) for i in range(-(-bins // self.factor))]
        self.span = bins * float(series.get("bin_s") or 1.0)

    def total(self, values: list[int]) -> list[int]:
        return self._merge(values, np.sum)

    def peak(self, values: list[int]) -> list[int]:
        return self._merge(values, np.max)

    def _merge(self, values: list[int], reduce: Callable[..., np.ndarray]) -> list[int]:
        arr = np.asarray(values, dtype=np.int64)
        arr = np.pad(arr, (0, -len(arr) % self.factor))
        return reduce(arr.reshape(-1, self.factor), axis=1).tolist()

    @property
    def per_bin(self) -> str:
        width = self.bin_s
        return f"per {width * 1e3:.3g} ms" if width < 1 else f"per {width:.3g} s"

    def windows(self, layer: str) -> list[dict[str, Any]]:
        """Shaded spans for the evidence windows of this layer's findings (not when one covers most of the
        capture: shading everything says nothing)."""
        return [{"type": "rect", "xref": "x", "yref": "paper", "x0": w[0] - self.t0, "x1": w[1] - self.t0,
                 "y0": 0, "y1": 1, "fillcolor": WINDOW_FILL, "line": {"width": 0}, "layer": "below"}
                for f in self.findings if f.layer == layer and (w := f.evidence.window)
                and w[1] - w[0] < WINDOW_SHADE_SHARE * self.span]

    def metric(self, layer: str, name: str) -> Any:
        """The first value of a metric among this layer's findings (detectors name their own metrics)."""
        return next((f.evidence.metrics[name] for f in self.findings
                     if f.layer == layer and f.evidence.metrics.get(name) is not None), None)


def _figure(traces: list[go.BaseTraceType], *, y: str, x: str = TIME_AXIS, shapes: list | None = None,
            empty: str | None = None, **layout: Any) -> go.Figure:
    """A figure with the report's look; `empty` is said in the middle when there is nothing to draw."""
    fig = go.Figure(traces)
    fig.update_layout(
        template="none", height=300, margin={"l": 60, "r": 16, "t": 28, "b": 48},
        font={"family": FONT, "size": 12, "color": "#1f2933"}, paper_bgcolor="white", plot_bgcolor="white",
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 11}},
        showlegend=len(traces) > 1, hovermode="closest", shapes=shapes or [],
        xaxis={"title": {"text": esc(x)}, "gridcolor": "#eef0f3", "zeroline": False, "automargin": True},
        yaxis={"title": {"text": esc(y)}, "gridcolor": "#eef0f3", "zeroline": False, "rangemode": "tozero",
               "automargin": True},
    )
    if empty:
        fig.add_annotation(text=esc(empty), xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                           font={"size": 13, "color": GREY})
    fig.update_layout(**layout)
    return fig


def _line(ctx: _Context, values: list[int], name: str, colour: str, **kw: Any) -> go.Scatter:
    return go.Scatter(x=ctx.x, y=values, name=label(name), mode="lines", line={"color": colour, "width": 1.6,
                      "shape": "hv"}, hovertemplate="%{y} at %{x:.3f} s<extra>" + label(name) + "</extra>", **kw)


def _bar(x: list[Any], y: list[Any], name: str, colour: str | list[str], **kw: Any) -> go.Bar:
    return go.Bar(x=x, y=y, name=label(name), marker={"color": colour}, **kw)


# -- L2 ----------------------------------------------------------------------------------------------------------

def l2_arp(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L2"]
    traces = [_line(ctx, ctx.total(s["arp_request"]), "ARP requests", BLUE),
              _line(ctx, ctx.total(s["arp_reply"]), "ARP replies", GREEN)]
    ndp = (("ndp_solicit", "IPv6 neighbour solicitations", PURPLE), ("ndp_advert", "IPv6 neighbour advertisements",
                                                                      TEAL))
    traces += [_line(ctx, ctx.total(s[k]), name, c) for k, name, c in ndp if any(s[k])]
    quiet = not any(s["arp_request"]) and not any(s["arp_reply"])
    return ("ARP requests and replies",
            "Requests that no reply follows mean a neighbour is missing; a wall of requests is a storm.",
            _figure(traces, y=f"frames {ctx.per_bin}", shapes=ctx.windows("L2"),
                    empty="no ARP in this capture" if quiet else None))


def l2_broadcast(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L2"]
    window_ms = s.get("duplicate_window_s", 0.1) * 1e3
    traces = [_line(ctx, ctx.total(s["broadcast"]), "broadcast frames", BLUE),
              _line(ctx, ctx.total(s["broadcast_duplicate"]), f"byte-identical repeats within {window_ms:g} ms", RED)]
    return ("Broadcast frames and recirculated duplicates",
            "A switching loop sends the same frames around within milliseconds: the red series climbs with the "
            "blue one. Hosts repeat a broadcast only after a retry timer, so healthy traffic keeps it near zero.",
            _figure(traces, y=f"frames {ctx.per_bin}", shapes=ctx.windows("L2"),
                    empty=None if any(s["broadcast"]) else "no broadcast frames in this capture"))


# -- L3 ----------------------------------------------------------------------------------------------------------

def _implied_segment(ctx: _Context) -> tuple[float | None, str]:
    """The largest segment the path carries, from a finding's path MTU, an ICMP MTU or the largest ACKed size."""
    path_mtu = ctx.metric("L3", "path_mtu")
    if path_mtu is not None:
        clamp = ctx.metric("L3", "mss_clamp") or path_mtu - HEADER
        return float(clamp), f"implied path MTU {path_mtu} B: segments up to {clamp} B get through"
    icmp = ctx.s["L3"]["icmp_mtu"]["mtu"]
    if icmp:
        return float(min(icmp) - HEADER), f"ICMP-reported MTU {min(icmp)} B (segments up to {min(icmp) - HEADER} B)"
    acked = [int(k) for k in ctx.s["L3"]["largest_acked"]]
    if acked:
        return float(max(acked)), f"largest ACKed segment {max(acked)} B (path MTU at least {max(acked) + HEADER} B)"
    return None, ""


def l3_segments(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L3"]
    points = s["retransmissions"]
    peaks = ctx.peak(s["max_segment"])
    seen = [i for i, v in enumerate(peaks) if v]
    traces: list[go.BaseTraceType] = [go.Scatter(
        x=[ctx.x[i] for i in seen], y=[peaks[i] for i in seen], mode="markers", name=label("largest segment sent"),
        marker={"color": BLUE, "size": 4, "opacity": 0.6},
        hovertemplate="largest segment %{y} B around %{x:.3f} s<extra></extra>")]
    for acked, name, colour, symbol in ((False, "retransmission, never ACKed", RED, "x"),
                                        (True, "retransmission, ACKed", ORANGE, "circle-open")):
        idx = [i for i, a in enumerate(points["acked"]) if a is acked]
        if idx:
            traces.append(go.Scatter(
                x=[points["t"][i] for i in idx], y=[points["size"][i] for i in idx], mode="markers",
                name=label(name), marker={"color": colour, "symbol": symbol, "size": 8},
                customdata=[label(points["kind"][i]) for i in idx],
                hovertemplate="%{customdata}: %{y} B at %{x:.3f} s<extra></extra>"))
    mtu = s["icmp_mtu"]
    if mtu["t"]:
        traces.append(go.Scatter(
            x=mtu["t"], y=[m - HEADER for m in mtu["mtu"]], mode="markers", name=label("ICMP frag-needed / too big"),
            marker={"color": PURPLE, "symbol": "diamond", "size": 9}, customdata=[label(r) for r in mtu["reporter"]],
            hovertemplate="router %{customdata} reports MTU (segment %{y} B)<extra></extra>"))
    ceiling, text = _implied_segment(ctx)
    shapes = ctx.windows("L3")
    annotations = []
    if ceiling is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": ceiling, "y1": ceiling,
                       "line": {"color": GREEN, "dash": "dash", "width": 1.4}})
        annotations.append({"text": esc(text), "xref": "paper", "x": 1, "xanchor": "right", "y": ceiling,
                            "yanchor": "bottom", "showarrow": False, "font": {"size": 11, "color": GREEN}})
    omitted = f" Showing {len(points['t'])} of {points['total']} retransmissions." if points["omitted"] else ""
    return ("TCP segment size over time, retransmissions marked",
            "A path-MTU black hole shows full-size segments retransmitted and never ACKed above the dashed line, "
            "while everything smaller flows." + omitted,
            _figure(traces, y="TCP payload bytes", shapes=shapes, annotations=annotations,
                    empty=None if any(s["max_segment"]) else "no TCP payload in this capture"))


def l3_acked_sizes(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L3"]
    acked = {int(k): v for k, v in s["largest_acked"].items()}
    never = {int(k): v for k, v in s["never_acked"].items()}
    top = max([*acked, *never, 1])
    width = max(top / 150, 2)
    traces = [_bar(list(acked), list(acked.values()), "largest ACKed segment", GREEN, width=width),
              _bar(list(never), list(never.values()), "largest segment, never ACKed", RED, width=width)]
    ceiling, _ = _implied_segment(ctx)
    shapes = [] if ceiling is None else [{"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": ceiling,
                                          "x1": ceiling, "line": {"color": GREEN, "dash": "dash", "width": 1.4}}]
    return ("ACKed and never-ACKed segment sizes",
            "Per connection and direction: the largest segment that was ACKed, and the largest one sent if it never "
            "was. Red bars right of every green one is the black-hole signature; red and green mixed at the same "
            "size is ordinary loss.",
            _figure(traces, y="connection directions", x="TCP payload bytes", shapes=shapes, barmode="overlay",
                    bargap=0, empty=None if acked or never else "no TCP data segments in this capture"))


# -- L4 ----------------------------------------------------------------------------------------------------------

def l4_half_open(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L4"]
    traces = [_line(ctx, ctx.peak(server["series"]), server["server"], SERVER_COLOURS[i % len(SERVER_COLOURS)])
              for i, server in enumerate(s["half_open"])]
    if len(s["half_open"]) > 1 or s["half_open_omitted"]:
        traces.append(_line(ctx, ctx.peak(s["half_open_total"]), "all servers", GREY, opacity=0.7))
    if any(s["syn_only_total"]):
        traces.append(_line(ctx, ctx.peak(s["syn_only_total"]), "SYNs never answered (all servers)", RED,
                            opacity=0.7))
    return ("Half-open handshakes over time, per server:port",
            "Connections whose SYN was answered by a SYN-ACK but never ACKed, counted while they last. A SYN flood "
            "piles them up on one server:port; healthy servers stay at zero.",
            _figure(traces, y="half-open connections", shapes=ctx.windows("L4"), showlegend=bool(traces),
                    empty=None if traces else "no half-open handshakes: every answered SYN was ACKed"))


def l4_handshakes(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["L4"]
    traces = [_line(ctx, ctx.total(s["syn"]), "SYN", BLUE), _line(ctx, ctx.total(s["synack"]), "SYN-ACK", ORANGE),
              _line(ctx, ctx.total(s["ack3"]), "handshake-completing ACK", GREEN)]
    return ("SYN, SYN-ACK and completing ACK rates",
            "In a healthy capture the three move together. SYN-ACKs without completing ACKs are half-open "
            "handshakes; SYNs without SYN-ACKs are unanswered.",
            _figure(traces, y=f"packets {ctx.per_bin}", shapes=ctx.windows("L4"),
                    empty=None if any(s["syn"]) or any(s["synack"]) else "no TCP handshakes in this capture"))


def l4_source_ports(ctx: _Context) -> tuple[str, str, go.Figure]:
    ports = ctx.s["L4"]["source_ports"]
    points = ports.get("points") or {"t": [], "port": [], "total": 0, "omitted": 0}
    everyone = ports["all"]
    busy = ports.get("connections", 0) > 1
    who = f"{ports['client']} -> {ports['server']}" if busy else ""
    traces = [go.Scatter(x=everyone["t"], y=everyone["port"], mode="markers", name=label("any new connection"),
                         marker={"color": "#94a3b8", "size": 4, "opacity": 0.6},
                         hovertemplate="source port %{y} at %{x:.3f} s<extra></extra>")]
    if busy:
        traces.append(go.Scatter(x=points["t"], y=points["port"], mode="markers", name=label(who),
                                 marker={"color": BLUE, "size": 5, "opacity": 0.8},
                                 hovertemplate="source port %{y} at %{x:.3f} s<extra></extra>"))
    shapes = [{"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "y0": low, "y1": high, "line": {"width": 0},
               "fillcolor": colour, "layer": "below"}
              for (low, high, _), colour in zip(EPHEMERAL_RANGES, ("rgba(22,163,74,0.07)", "rgba(124,58,237,0.07)"),
                                                strict=True)]
    annotations = [{"text": esc(name), "xref": "paper", "x": 1, "xanchor": "right", "y": y, "yanchor": anchor,
                    "showarrow": False, "font": {"size": 10, "color": colour}, "bgcolor": "rgba(255,255,255,0.85)"}
                   for (low, high, name), y, anchor, colour in zip(EPHEMERAL_RANGES, (32768, 65535),
                                                                   ("bottom", "top"), (GREEN, PURPLE), strict=True)]
    sample = f" Showing {len(points['t'])} of {points['total']}." if points.get("omitted") else ""
    busiest = (f"Busiest client -> server:port in blue: {who} ({ports['connections']} connections).{sample} "
               if busy else "No client opened more than one connection to the same server:port. ")
    if ports["untracked"]:
        busiest += f"{ports['untracked']} connections of rarely seen pairs were not followed. "
    return ("Source ports of new connections against the ephemeral range",
            busiest + "Port exhaustion sweeps the whole ephemeral range quickly and wraps around; a pooled client "
            "reuses a few ports.",
            _figure(traces, y="client source port", shapes=shapes, annotations=annotations,
                    yaxis_range=_port_range(everyone["port"]),
                    empty=None if everyone["t"] else "no TCP connections in this capture"))


def _port_range(ports: list[int]) -> list[float]:
    """The ports in use with some room, so a sweep through a narrow range stays visible (0-65535 when none)."""
    if not ports:
        return [0, 65535]
    lo, hi = min(ports), max(ports)
    pad = max((hi - lo) * 0.08, 200)
    return [max(lo - pad, 0), min(hi + pad, 65535)]


# -- DNS ---------------------------------------------------------------------------------------------------------

def _ms(value: float) -> str:
    return f"{value:g} ms" if value < 1000 else f"{value / 1000:g} s"


def _span(lo: float, hi: float) -> str:
    """A bucket as `1-2 ms`, `500 ms-1 s` or `1-2 s`."""
    if hi < 1000:
        return f"{lo:g}-{hi:g} ms"
    return f"{lo / 1000:g}-{hi / 1000:g} s" if lo >= 1000 else f"{_ms(lo)}-{_ms(hi)}"


def _rtt_colour(upper_ms: float) -> str:
    """Green under 100 ms, orange under 1 s, red slower."""
    return GREEN if upper_ms <= 100 else ORANGE if upper_ms <= 1000 else RED


def dns_response_times(ctx: _Context) -> tuple[str, str, go.Figure]:
    hist = ctx.s["DNS"]["rtt_histogram"]
    edges, counts = hist["edges_ms"], hist["counts"]
    names = [f"< {_ms(edges[0])}", *(_span(lo, hi) for lo, hi in pairwise(edges)), f">= {_ms(edges[-1])}"]
    used = [i for i, n in enumerate(counts) if n]
    lo, hi = (max(used[0] - 1, 0), min(used[-1] + 2, len(counts))) if used else (0, 0)
    uppers = [*edges, float("inf")]  # bucket i holds answers below uppers[i]
    colours = [_rtt_colour(uppers[i]) for i in range(lo, hi)]
    traces = [_bar([label(n) for n in names[lo:hi]], counts[lo:hi], "responses", colours,
                   hovertemplate="%{y} responses in %{x}<extra></extra>")]
    return ("DNS response-time distribution",
            "Time from a client's first query to the resolver's answer (log-spaced buckets). Green under 100 ms, "
            "orange under 1 s, red slower: slow answers stall every connection that waits for them.",
            _figure(traces, y="responses", x="response time", xaxis_type="category",
                    empty=None if used else "no DNS query was answered in this capture"))


def dns_rcodes(ctx: _Context) -> tuple[str, str, go.Figure]:
    s = ctx.s["DNS"]
    counts = dict(s["rcodes"]) | ({"no answer": s["unanswered"]} if s["unanswered"] else {})
    names = list(counts)
    traces = [_bar([label(n) for n in names], list(counts.values()), "responses",
                   [RCODE_COLOURS.get(n, RED) for n in names], hovertemplate="%{x}: %{y}<extra></extra>")]
    return ("DNS response codes",
            "NOERROR is a working resolver; NXDOMAIN a name that does not exist; SERVFAIL and REFUSED a resolver "
            "that cannot or will not answer; 'no answer' counts queries nobody responded to.",
            _figure(traces, y="responses", x="rcode", xaxis_type="category",
                    empty=None if counts else "no DNS in this capture"))


def dns_over_time(ctx: _Context) -> tuple[str, str, go.Figure]:
    rtt = ctx.s["DNS"]["rtt"]
    traces = []
    for name, colour, wanted in (("NOERROR", GREEN, {"NOERROR"}), ("NXDOMAIN", ORANGE, {"NXDOMAIN"}),
                                 ("other rcodes", RED, None)):
        idx = [i for i, r in enumerate(rtt["rcode"]) if (r in wanted if wanted else r not in RCODE_COLOURS)]
        if idx:
            traces.append(go.Scatter(
                x=[rtt["t"][i] for i in idx], y=[rtt["ms"][i] for i in idx], mode="markers", name=label(name),
                marker={"color": colour, "size": 7},
                customdata=[[label(rtt["qname"][i]), label(rtt["rcode"][i])] for i in idx],
                hovertemplate="%{customdata[0]}<br>%{customdata[1]} after %{y} ms<extra></extra>"))
    sample = f" Showing {len(rtt['t'])} of {rtt['total']}." if rtt["omitted"] else ""
    return ("DNS response time of each answered query",
            "One dot per answer at the time of its query: a slow or failing resolver shows as a cluster high up or "
            "a run of error codes." + sample,
            _figure(traces, y="response time (ms)", yaxis_type="log", yaxis_dtick=1, shapes=ctx.windows("DNS"),
                    empty=None if rtt["t"] else "no DNS query was answered in this capture"))


# -- TLS ---------------------------------------------------------------------------------------------------------

def tls_outcomes(ctx: _Context) -> tuple[str, str, go.Figure]:
    outcomes = ctx.s["TLS"]["outcomes"]
    names = list(outcomes)
    traces = [_bar([label(n) for n in names], list(outcomes.values()), "handshakes",
                   [TLS_COLOURS[n] for n in names], hovertemplate="%{x}: %{y}<extra></extra>")]
    alerts = ctx.s["TLS"]["alerts"]
    said = "; ".join(f"{name} ({n})" for name, n in list(alerts.items())[:5])
    return ("TLS handshake outcomes",
            "Per connection with a ClientHello: a ServerHello came back; a fatal alert ended it; it was reset before "
            "any ServerHello (often a middlebox filtering on SNI); or nothing answered." +
            (f" Fatal alerts: {said}." if said else ""),
            _figure(traces, y="connections", x="outcome", xaxis_type="category",
                    empty=None if any(outcomes.values()) else "no TLS handshakes in this capture"))


def tls_by_sni(ctx: _Context) -> tuple[str, str, go.Figure]:
    rows = ctx.s["TLS"]["by_sni"]
    names: list[str] = []
    for row in rows:
        if row["sni"] not in names:
            names.append(row["sni"])
    names = names[:TOP_SNI]
    shown = _unique([label(n) if n else "(no SNI)" for n in names])
    traces = [go.Bar(y=shown, x=[sum(r["count"] for r in rows if r["sni"] == n and r["outcome"] == outcome)
                                 for n in names], name=label(outcome), orientation="h",
                     marker={"color": colour}, hovertemplate="%{y}: %{x}<extra>" + label(outcome) + "</extra>")
              for outcome, colour in TLS_COLOURS.items()]
    return ("TLS handshake outcomes by server name (SNI)",
            "Which names fail: a block on one SNI, an expired certificate on one service, or everything at once.",
            _figure(traces, y="server name", x="connections", barmode="stack", yaxis_type="category",
                    yaxis_autorange="reversed", height=max(220, 60 + 26 * len(names)),
                    margin={"l": 220, "r": 16, "t": 28, "b": 48},
                    empty=None if names else "no TLS handshakes in this capture"))


def _unique(labels: list[str]) -> list[str]:
    """Category labels must differ, or plotly merges them: cut labels that collide get a number."""
    seen: dict[str, int] = {}
    out = []
    for text in labels:
        seen[text] = seen.get(text, 0) + 1
        out.append(text if seen[text] == 1 else f"{text} #{seen[text]}")
    return out


# -- L7 ----------------------------------------------------------------------------------------------------------

def l7_headers(ctx: _Context) -> tuple[str, str, go.Figure]:
    req = ctx.s["L7"]["requests"]
    traces = []
    for complete, name, colour, symbol in ((True, "header block complete", GREEN, "circle"),
                                           (False, "never completed (time it stayed open)", RED, "x")):
        idx = [i for i, c in enumerate(req["complete"]) if c is complete]
        if idx:
            traces.append(go.Scatter(
                x=[req["t"][i] for i in idx], y=[req["seconds"][i] for i in idx], mode="markers", name=label(name),
                marker={"color": colour, "symbol": symbol, "size": 7},
                customdata=[[label(req["method"][i]), label(req["target"][i]), label(req["host"][i]),
                             req["segments"][i]] for i in idx],
                hovertemplate="%{customdata[0]} %{customdata[1]}<br>Host: %{customdata[2]}<br>%{y:.3f} s, "
                              "%{customdata[3]} segment(s)<extra></extra>"))
    sample = f" Showing {len(req['t'])} of {req['total']}." if req["omitted"] else ""
    return ("HTTP header-completion time per request",
            "Seconds from a request's first segment to the one that ends its header block. Slowloris holds "
            "connections open with headers that never complete: red crosses that stay open for tens of seconds."
            + sample,
            _figure(traces, y="seconds to complete the header block", shapes=ctx.windows("L7"), yaxis_tickformat="~g",
                    empty=None if traces else "no HTTP/1 requests in this capture"))


# -- overview ----------------------------------------------------------------------------------------------------

def traffic(ctx: _Context) -> tuple[str, str, go.Figure]:
    return ("Traffic", f"Packets {ctx.per_bin} over the capture.",
            _figure([_line(ctx, ctx.total(ctx.s["packets"]), "packets", BLUE, fill="tozeroy",
                           fillcolor="rgba(37,99,235,0.12)")],
                    y=f"packets {ctx.per_bin}", height=200, showlegend=False,
                    margin={"l": 60, "r": 16, "t": 8, "b": 44}))


Builder = Callable[[_Context], tuple[str, str, go.Figure]]
CHARTS: dict[str, tuple[Builder, ...]] = {
    "index": (traffic,),
    "L2": (l2_broadcast, l2_arp),
    "L3": (l3_segments, l3_acked_sizes),
    "L4": (l4_half_open, l4_handshakes, l4_source_ports),
    "DNS": (dns_response_times, dns_rcodes, dns_over_time),
    "TLS": (tls_outcomes, tls_by_sni),
    "L7": (l7_headers,),
}


def charts_for(page: str, series: dict[str, Any], findings: list[Finding]) -> list[Chart]:
    """The figures of one page ("index" or a layer); none when there is no series (an empty capture)."""
    if not series or not series.get("bins"):
        return []
    ctx = _Context(series, findings)
    charts = []
    for i, build in enumerate(CHARTS[page], start=1):
        title, caption, fig = build(ctx)
        charts.append(Chart(f"{page}-{i}", esc(title), esc(caption, CAPTION_LIMIT), pio.to_json(fig, validate=False)))
    return charts
