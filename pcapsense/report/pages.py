"""The report's pages as HTML: the index (ladder, narrative, findings by layer, capture facts) and one page per rung.

Templates are plain functions. Every value that did not come from this module's own literals goes through
`esc` (safety.py) on its way in, so packet data can only ever be text (a Chart's title and caption arrive
escaped by charts.py); the figures travel as JSON inside `<script type="application/json">` blocks, which the
browser never executes (and plotly's serialiser escapes `<`, `>` and `/` in them, so none can close the block).
A Content-Security-Policy forbids every network load, so the report works offline and cannot leak that it was
opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pcapsense import __version__
from pcapsense.engine import AnalysisResult
from pcapsense.findings import LAYERS, Finding
from pcapsense.ladder import Rung
from pcapsense.report import facts
from pcapsense.report.charts import Chart
from pcapsense.report.evidence import EvidenceFile
from pcapsense.report.safety import esc
from pcapsense.report.wireshark import Dissection, key_frames

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self' data:; connect-src 'none'; form-action 'none'; base-uri 'none'")
PAGE = {layer: f"{layer}.html" for layer in LAYERS} | {"index": "index.html"}
PLOTLY_JS = "plotly.min.js"  # bundled next to the pages, unless a fleet of reports shares one copy
LAYER_INFO = {  # name and scope of each rung (seed, "The Model as an Ownership Map" and the triage ladder)
    "L2": ("Link", "Ethernet, ARP, MAC learning, VLANs, broadcast domains"),
    "L3": ("Network", "IP, routing, ICMP, fragmentation and path MTU"),
    "L4": ("Transport", "TCP and UDP: handshakes, ports, connection state"),
    "DNS": ("Name resolution", "queries, answers, response codes and response times"),
    "TLS": ("TLS", "handshakes, alerts and server names"),
    "L7": ("Application", "HTTP/1 requests and their header blocks"),
}
DECISIVE_TEST = {  # the seed's "cheap, decisive test" for each rung, to confirm from a host
    "L2": "ip neigh show (is the neighbour's MAC resolved?)",
    "L3": "ping -M do -s 1472 HOST, then traceroute HOST (reachability and path MTU)",
    "L4": "nc -vz HOST PORT (does the handshake complete?)",
    "DNS": "dig +short NAME @RESOLVER",
    "TLS": "openssl s_client -connect HOST:443 -servername NAME",
    "L7": "curl -v with a real payload size",
}
FRAMES_SHOWN = 60
FLOWS_SHOWN = 12
HOSTS_SHOWN = 20
METRIC_ITEMS = 12  # entries of a list or dict metric shown


def layout(page: str, title: str, body: str, result: AnalysisResult, plotly_src: str = PLOTLY_JS) -> str:
    """A complete page: CSP, navigation with each rung's status, the body, and the scripts (local files only)."""
    status = {r.rung: r.status for r in result.ladder}
    current = ' class="current" aria-current="page"'
    nav = "".join(
        f'<a href="{PAGE[key]}"{current if key == page else ""}>'
        + (f'<span class="dot {_cls(status.get(key, "not observed"))}"></span>' if key in LAYERS else "")
        + f"{'Overview' if key == 'index' else key}</a>"
        for key in ("index", *LAYERS))
    cap = result.capture
    fault = cap.get("fault")
    partial = (f'<p class="partial"><strong>Partial analysis:</strong> reading stopped at record '
               f'#{esc(fault["record"])} (byte offset {esc(fault["offset"])}): {esc(fault["message"])}. Results '
               "cover the records before it.</p>") if fault else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} - pcapsense</title>
<link rel="stylesheet" href="report.css">
</head>
<body>
<header class="top">
<div class="top-inner">
<a class="brand" href="index.html">pcapsense</a>
<span class="capture" title="{esc(cap['path'])}">{esc(cap['path'], 80)}</span>
<nav>{nav}</nav>
</div>
</header>
<main>
{partial}{body}
</main>
<footer>pcapsense {esc(__version__)} &middot; offline report: no network access &middot; frame numbers are
Wireshark's &middot; <a href="findings.json">findings.json</a> &middot; <a href="findings.csv">findings.csv</a></footer>
<script src="{esc(plotly_src)}"></script>
<script src="report.js"></script>
</body>
</html>
"""


def _cls(status: str) -> str:
    return status.replace(" ", "-")


def pill(status: str) -> str:
    return f'<span class="pill {_cls(status)}">{esc(status)}</span>'


def severity(finding: Finding) -> str:
    return f'<span class="sev {esc(finding.severity)}">{esc(finding.severity)}</span>'


# -- index -------------------------------------------------------------------------------------------------------

def numbered(result: AnalysisResult, layer: str) -> list[tuple[int, Finding]]:
    """The findings of one layer with their report-wide number (1-based, in the result's order: worst first)."""
    return [(n, f) for n, f in enumerate(result.findings, start=1) if f.layer == layer]


def index_page(result: AnalysisResult, charts: list[Chart], plotly_src: str = PLOTLY_JS) -> str:
    fault = next((i for i, r in enumerate(result.ladder) if r.status == "broken"), len(result.ladder))
    rungs = "".join(_rung(r, above_fault=i > fault) for i, r in enumerate(result.ladder))
    by_layer = [(layer, numbered(result, layer)) for layer in LAYERS]
    findings = "".join(
        f'<div class="layer-group"><h3><a href="{PAGE[layer]}">{layer} &middot; {esc(LAYER_INFO[layer][0])}</a>'
        f'<span class="count">{len(mine)} finding{"s" if len(mine) != 1 else ""}</span></h3>'
        + "".join(_brief(f, n) for n, f in mine) + "</div>"
        for layer, mine in by_layer if mine) or (
        '<p class="clean-note">No detector found a failure signature in this capture. Each layer page still shows '
        "its health figures: clean is a result.</p>")
    warnings = result.capture.get("warnings") or []
    warning_list = (f'<div class="warnings"><h3>Reading warnings</h3><ul>'
                    f'{"".join(f"<li>{esc(w)}</li>" for w in warnings[:50])}</ul></div>') if warnings else ""
    body = f"""<section class="hero">
<div class="hero-head"><h1>Triage ladder</h1>
<p class="sub">Walked bottom-up: a rung is trusted only once the one below it is proven healthy.</p></div>
<ol class="ladder">{rungs}</ol>
<p class="narrative"><span class="narrative-label">Verdict</span>{esc(result.narrative, 2000)}</p>
</section>
<section>
<h2>Findings by layer</h2>
{findings}
</section>
<section class="capture-facts">
<h2>Capture</h2>
<div class="facts-grid">
<table class="facts">{"".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.capture_rows(result))}
</table>
<div>{"".join(chart_card(c, compact=True) for c in charts)}{warning_list}</div>
</div>
</section>"""
    return layout("index", "Overview", body, result, plotly_src)


def _rung(rung: Rung, above_fault: bool) -> str:
    """One rung. A clean rung above a broken one is drawn faded: the ladder is climbed only once the rung below
    is proven healthy, so what it shows is provisional until the fault below is fixed."""
    provisional = above_fault and rung.status in ("clean", "not observed")
    classes = f"rung {_cls(rung.status)}" + (" provisional" if provisional else "")
    title = ' title="provisional: a rung below is broken"' if provisional else ""
    return (f'<li class="{classes}"{title}><a href="{PAGE[rung.rung]}">'
            f'<span class="rung-top"><span class="rung-name">{esc(rung.rung)}</span>{pill(rung.status)}</span>'
            f'<span class="rung-layer">{esc(LAYER_INFO[rung.rung][0])}</span>'
            f'<span class="rung-note">{esc(rung.note, 140)}</span>'
            f'<span class="rung-owner">{esc(rung.owner, 80)}</span></a></li>')


def _brief(finding: Finding, n: int) -> str:
    frames = len(set(finding.evidence.frames))
    return (f'<article class="card brief sev-{esc(finding.severity)}">'
            f'<div class="card-head">{severity(finding)}<h4><a href="{PAGE[finding.layer]}#finding-{n}">'
            f"{esc(finding.title, 200)}</a></h4></div>"
            f'<p class="summary">{esc(finding.summary, 700)}</p>'
            f'<p class="meta">Owner: {esc(finding.owner, 120)} &middot; detector <code>{esc(finding.detector, 60)}'
            f"</code> &middot; {frames} evidence frame{'s' if frames != 1 else ''}</p></article>")


# -- layer pages -------------------------------------------------------------------------------------------------

def layer_page(layer: str, result: AnalysisResult, series: dict[str, Any], charts: list[Chart],
               evidence: list[EvidenceFile] | None, dissection: Dissection, plotly_src: str = PLOTLY_JS) -> str:
    rung = next(r for r in result.ladder if r.rung == layer)
    name, scope = LAYER_INFO[layer]
    mine = numbered(result, layer)
    tiles = "".join(f'<div class="tile{" warn" if fig.warn else ""}"><span class="tile-value">{esc(fig.value)}'
                    f'</span><span class="tile-name">{esc(fig.name)}</span></div>'
                    for fig in facts.key_figures(layer, result, series))
    figures = "".join(chart_card(c) for c in charts) or '<p class="muted">No packets were read: nothing to draw.</p>'
    if mine:
        cards = "".join(finding_card(f, n, evidence[n - 1] if evidence else None, dissection) for n, f in mine)
    elif rung.status == "not observed":
        cards = f'<p class="muted">No finding: {esc(rung.note)}, so this rung could not be judged.</p>'
    else:
        cards = (f'<p class="clean-note">No finding at {esc(layer)}: {esc(rung.note)}. Clean is a result: the '
                 "figures above are what this layer looked like.</p>")
    body = f"""<section class="layer-head">
<p class="crumb">Rung {LAYERS.index(layer) + 1} of {len(LAYERS)} &middot; {esc(scope)}</p>
<h1>{esc(layer)} &middot; {esc(name)} {pill(rung.status)}</h1>
<p class="rung-line">{esc(rung.note, 300)}</p>
<p class="owner-line">Owner: {esc(rung.owner)} &middot; confirm from a host:
<code>{esc(DECISIVE_TEST[layer])}</code></p>
</section>
<section>
<h2>Health figures</h2>
<div class="tiles">{tiles}</div>
<div class="charts">{figures}</div>
</section>
<section>
<h2>Findings <span class="count">{len(mine)}</span></h2>
{cards}
</section>"""
    return layout(layer, f"{layer} {name}", body, result, plotly_src)


def chart_card(chart: Chart, compact: bool = False) -> str:
    return (f'<figure class="chart-card{" compact" if compact else ""}">'
            f'<figcaption><strong>{chart.title}</strong><span>{chart.caption}</span></figcaption>'
            f'<div class="chart" id="chart-{chart.key}"></div>'
            f'<script type="application/json" id="chart-{chart.key}-json">{chart.json}</script></figure>')


def finding_card(finding: Finding, n: int, evidence: EvidenceFile | None, dissection: Dissection) -> str:
    ev = finding.evidence
    rows = [("Remedy", esc(finding.remedy, 2000)), ("Owner", esc(finding.owner))]
    if ev.window:
        rows.append(("Window", f"{esc(facts.utc(ev.window[0]))} to {esc(facts.utc(ev.window[1]))} "
                               f"({esc(facts.seconds(ev.window[1] - ev.window[0]))})"))
    if ev.hosts:
        rows.append(("Hosts", _more((f"<code>{esc(h, 80)}</code>" for h in ev.hosts[:HOSTS_SHOWN]), len(ev.hosts),
                                    HOSTS_SHOWN, " ")))
    if ev.flows:
        rows.append(("Flows", '<ul class="flows">' + _more((f"<li><code>{esc(f, 200)}</code></li>"
                                                            for f in ev.flows[:FLOWS_SHOWN]),
                                                           len(ev.flows), FLOWS_SHOWN, "", "li") + "</ul>"))
    frames = sorted(set(ev.frames))
    rows.append(("Evidence frames", (('<span class="frames">' + _more((str(f) for f in frames[:FRAMES_SHOWN]),
                                                                      len(frames), FRAMES_SHOWN, " ") + "</span>")
                                     if frames else "none named") + _evidence_file(evidence)))
    table = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    caveats = (f'<div class="caveats"><strong>Caveats</strong><ul>'
               f'{"".join(f"<li>{esc(c)}</li>" for c in finding.caveats)}</ul></div>') if finding.caveats else ""
    filt = (f'<div class="filter"><span class="filter-label">Wireshark filter</span><code id="filter-{n}">'
            f'{esc(finding.filter, 4000)}</code><button class="copy" type="button" data-target="filter-{n}">Copy'
            "</button></div>") if finding.filter else ""
    return f"""<article class="card finding sev-{esc(finding.severity)}" id="finding-{n}">
<div class="card-head">{severity(finding)}<h3>{esc(finding.title, 200)}</h3>
<code class="det">{esc(finding.detector, 60)}</code></div>
<p class="summary">{esc(finding.summary, 2000)}</p>
{filt}
<dl class="kv">{table}</dl>
{caveats}
{_metrics(ev.metrics)}
{_tshark(finding, dissection)}
</article>"""


def _more(items: Iterable[str], total: int, shown: int, sep: str, tag: str = "span") -> str:
    rest = f'<{tag} class="more">and {total - shown:,} more</{tag}>' if total > shown else ""
    return sep.join(items) + (sep if rest and sep else "") + rest


def _evidence_file(evidence: EvidenceFile | None) -> str:
    if evidence is None:
        return ' <span class="muted">&middot; run with --extract-evidence for a pcap of these frames</span>'
    if evidence.path is None:
        return f' <span class="muted">&middot; {esc(evidence.note)}</span>'
    return (f' &middot; <a class="pcap" href="{esc(evidence.path)}" download>{esc(evidence.path.split("/")[-1])}</a>'
            f' <span class="muted">({esc(evidence.note)})</span>')


def _metrics(metrics: dict[str, Any]) -> str:
    if not metrics:
        return ""
    rows = "".join(f"<tr><th>{esc(k, 80)}</th><td>{esc(_value(v), 800)}</td></tr>" for k, v in metrics.items())
    return f'<details class="metrics"><summary>Detector metrics</summary><table>{rows}</table></details>'


def _value(value: Any) -> str:
    """A metric as one line: dicts and lists shortened to their first items, with how many were left out."""
    if isinstance(value, dict):
        items = [f"{k}: {_value(v)}" for k, v in list(value.items())[:METRIC_ITEMS]]
        return "{" + ", ".join(items) + (f", ... {len(value) - METRIC_ITEMS} more" if len(value) > METRIC_ITEMS
                                         else "") + "}"
    if isinstance(value, list | tuple):
        more = f", ... {len(value) - METRIC_ITEMS} more" if len(value) > METRIC_ITEMS else ""
        return "[" + ", ".join(_value(v) for v in value[:METRIC_ITEMS]) + more + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _tshark(finding: Finding, dissection: Dissection) -> str:
    wanted = key_frames(finding)
    if not wanted:
        return ""
    shown = [f for f in wanted if f in dissection.frames]
    note = f'<p class="muted">{esc(dissection.note)}</p>' if dissection.note else ""
    frames = "".join(
        f'<div class="frame"><h5>Frame {f}</h5>' + "".join(
            f"<details><summary>{esc(layer.name, 40)}</summary><pre>"
            + "\n".join(esc(line, 300) for line in layer.lines) + "</pre></details>"
            for layer in dissection.frames[f]) + "</div>"
        for f in shown)
    which = ", ".join(str(f) for f in wanted)
    return (f'<details class="tshark"><summary>Wireshark\'s view: tshark\'s dissection of frame'
            f'{"s" if len(wanted) > 1 else ""} {which}</summary>{note}{frames}</details>')
