"""The fleet index: one HTML page over a scan -- where the archive hurts, which layer, and where to click next.

It opens offline: plotly.js is written once next to it from the installed plotly package, never fetched from a
CDN. Every string that comes from a packet or a path is HTML-escaped, in the page and inside the plotly figure
too, because plotly.js renders `<a href>`, `<b>`, `<br>` it finds in labels and hover text; the figure's JSON is
embedded with `<`, `>`, `&` escaped so no string can close the script element.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pcapsense import __version__
from pcapsense.findings import LAYERS, Severity
from pcapsense.report.pages import PLOTLY_JS
from pcapsense.scan.catalog import FAILED, OK, PARTIAL, iso_utc
from pcapsense.scan.reports import write_atomic

INDEX = "index.html"
TOP_FINDINGS = 100
HEATMAP_ROWS = 1000  # beyond this a heat map is unreadable; the tables below still list every capture
LABEL_CHARS = 60
NO_FINDING = -1
SEVERITY_COLOURS = {"info": "#9ecae1", "low": "#fdd49e", "medium": "#fc8d59", "high": "#d7301f",
                    "critical": "#67000d"}
SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 2em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.num{text-align:right}
.sev{padding:0 .4em;border-radius:3px;color:#fff}
.sev-info,.sev-low{color:#222}
.meta{color:#555}
code{word-break:break-all}
"""


@dataclass(frozen=True)
class Capture:
    """One capture as the index shows it."""

    row: dict[str, Any]  # its `captures` row
    label: str  # path relative to its scan root (or the full path when it has none)
    link: str | None  # its report, relative to the index
    findings: list[dict[str, Any]]

    @property
    def worst(self) -> int:
        return max((rank(f["severity"]) for f in self.findings), default=NO_FINDING)


def _plotly_text(text: str) -> str:
    """Escaped for plotly.js, which decodes &lt; &gt; &amp; (and numeric entities) but shows `&quot;` as is."""
    return escape(text, quote=False)


def rank(severity: str) -> int:
    return int(Severity.parse(severity))


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else "…" + label[-LABEL_CHARS + 1:]


def _link(capture: Capture) -> str:
    shown = f"<code>{escape(capture.label)}</code>"
    return f'<a href="{escape(quote(capture.link))}">{shown}</a>' if capture.link else shown


def _severity(name: str) -> str:
    return f'<span class="sev sev-{escape(name)}" style="background:{SEVERITY_COLOURS[name]}">{escape(name)}</span>'


def _window(finding: dict[str, Any]) -> str:
    return " to ".join(iso_utc(t) or "" for t in (finding["window_start"], finding["window_end"])
                      if t is not None)


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """Cells are HTML already (each caller escapes what it puts in them)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _heatmap(captures: list[Capture]) -> str:
    """Captures x layers, coloured by the worst severity found there; a click opens the capture's report."""
    affected = sorted((c for c in captures if c.findings), key=lambda c: (-c.worst, c.label))
    rows = affected[:HEATMAP_ROWS]
    if not rows:
        return "<p>No findings in this scan.</p>"
    cells = [[[f for f in c.findings if f["layer"] == layer] for layer in LAYERS] for c in rows]
    z = [[max((rank(f["severity"]) for f in cell), default=None) for cell in row] for row in cells]
    text = [[f"{_plotly_text(c.label)}<br>{layer}: "
             + (f"{Severity(level)} ({len(cell)} findings)" if level is not None else "no finding")
             for layer, cell, level in zip(LAYERS, row, levels, strict=True)]
            for c, row, levels in zip(rows, cells, z, strict=True)]
    bands = len(Severity)
    scale = [[(level + edge) / bands, SEVERITY_COLOURS[str(Severity(level))]]
             for level in range(bands) for edge in (0, 1)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(LAYERS), y=list(range(len(rows))), text=text, hovertemplate="%{text}<extra></extra>",
        customdata=[[c.link or ""] * len(LAYERS) for c in rows], colorscale=scale, zmin=-0.5, zmax=bands - 0.5,
        xgap=1, ygap=1,
        colorbar={"tickvals": list(range(bands)), "ticktext": [str(s) for s in Severity], "title": {"text": "worst"}},
    ))
    fig.update_layout(
        height=max(300, 120 + 18 * len(rows)), margin={"l": 20, "r": 20, "t": 30, "b": 30},
        xaxis={"side": "top"}, plot_bgcolor="#f7f7f7",
        yaxis={"tickvals": list(range(len(rows))), "ticktext": [_plotly_text(_short(c.label)) for c in rows],
               "autorange": "reversed", "automargin": True},
    )
    note = (f"<p class=meta>The {HEATMAP_ROWS} worst of {len(affected)} captures with findings are shown; the "
            "tables below list all.</p>" if len(affected) > HEATMAP_ROWS else "")
    figure = fig.to_json().translate(SCRIPT_ESCAPES)
    return f"""{note}<div id="heatmap"></div>
<script>
const fig = {figure};
const heat = document.getElementById("heatmap");
Plotly.newPlot(heat, fig.data, fig.layout, {{displaylogo: false, responsive: true}});
heat.on("plotly_click", (ev) => {{ const link = ev.points[0].customdata; if (link) window.location.href = link; }});
</script>"""


def _by_detector(findings: list[tuple[Capture, dict[str, Any]]]) -> str:
    groups: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)  # -> [(capture id, rank)]
    for capture, finding in findings:
        groups[finding["detector"], finding["layer"]].append((capture.row["id"], rank(finding["severity"])))
    rows = sorted((-max(r for _, r in group), -len(group), detector, layer, len({cid for cid, _ in group}))
                  for (detector, layer), group in groups.items())
    return _table(("detector", "layer", "worst", "captures", "findings"),
                  ((f"<code>{escape(detector)}</code>", escape(layer), _severity(str(Severity(-worst))), str(captures),
                    str(-count)) for worst, count, detector, layer, captures in rows))


def _top_findings(findings: list[tuple[Capture, dict[str, Any]]]) -> str:
    top = sorted(findings, key=lambda cf: (-rank(cf[1]["severity"]), cf[0].label, cf[1]["ordinal"]))[:TOP_FINDINGS]
    return _table(
        ("severity", "layer", "detector", "capture", "finding", "window (UTC)"),
        ((_severity(f["severity"]), escape(f["layer"]), f"<code>{escape(f['detector'])}</code>", _link(c),
          f"<b>{escape(f['title'])}</b><br>{escape(f['summary'])}", escape(_window(f)))
         for c, f in top))


def _all_captures(captures: list[Capture]) -> str:
    def number(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    return _table(
        ("capture", "status", "packets", "duration (s)", "findings", "worst", "note"),
        ((_link(c), escape(c.row["status"]), number(c.row["packets"], ","), number(c.row["duration_s"], ".3f"),
          str(len(c.findings)), _severity(str(Severity(c.worst))) if c.findings else "", escape(c.row["error"] or ""))
         for c in captures))


def render(captures: list[Capture]) -> str:
    statuses = Counter(c.row["status"] for c in captures)
    findings = [(c, f) for c in captures for f in c.findings]
    failed = [c for c in captures if c.row["status"] == FAILED]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pcapsense fleet index</title>
<style>{STYLE}</style><script src="{PLOTLY_JS}"></script></head>
<body>
<h1>pcapsense fleet index</h1>
<p class=meta>{len(captures)} captures: {statuses[OK]} ok, {statuses[PARTIAL]} partial, {statuses[FAILED]} failed;
{len(findings)} findings. Generated {generated} by pcapsense {escape(__version__)}.</p>
<h2>Worst severity by capture and layer</h2>
{_heatmap(captures)}
<h2>Findings by detector</h2>
{_by_detector(findings)}
<h2>Top findings</h2>
{_top_findings(findings)}
<h2>Failed captures ({len(failed)})</h2>
{_table(("capture", "reason"), ((_link(c), escape(c.row["error"] or "")) for c in failed))}
<h2>All captures</h2>
{_all_captures(captures)}
</body></html>
"""


def write_fleet_index(out_dir: Path, captures: list[Capture]) -> Path:
    """Write `out_dir/index.html`, and plotly.js beside it unless the same one is already there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    script = get_plotlyjs().encode()
    target = out_dir / PLOTLY_JS
    if not target.is_file() or target.stat().st_size != len(script):
        write_atomic(target, script)
    index = out_dir / INDEX
    write_atomic(index, render(captures).encode())
    return index
