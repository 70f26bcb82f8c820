"""The HTML report and its health-figure series, without a browser.

Covers: the timeline's bounded accumulation and the signatures it records on the sample captures; the files a
report writes and where; refusing to overwrite; escaping of hostile packet strings in the HTML and in the plotly
JSON (parsed, not grepped); findings.json / findings.csv; `--extract-evidence` output read back by our reader and
by tshark; tshark's drill-down and the note shown without it. Findings are built by hand where a test needs one,
so no test depends on a particular detector being installed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pcapsense.decode.columns import decode_batch
from pcapsense.decode.dnsbatch import DnsMessages
from pcapsense.engine import AnalysisOptions, AnalysisResult, analyze
from pcapsense.events import StreamBuilder
from pcapsense.findings import Evidence, Finding, FlowRef, Severity
from pcapsense.flows import FlowTable
from pcapsense.prepare import prepare
from pcapsense.reader import open_capture
from pcapsense.report import ReportExistsError, UnsafePathError, default_report_dir, write_report
from pcapsense.report import wireshark as drilldown
from pcapsense.report.evidence import NEEDS_FILE
from pcapsense.report.safety import esc
from pcapsense.timeline import MAX_BINS, MAX_POINTS, Timeline, _Bins, _Reservoir

TSHARK = shutil.which("tshark")
PAGES = ("index.html", "L2.html", "L3.html", "L4.html", "DNS.html", "TLS.html", "L7.html")
HOSTILE = ('<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '<a href="javascript:alert(3)">x</a>',
           '<a href="https://evil.example">bank</a>', '<span style="font-size:0">', r"$\href{javascript:alert(4)}{x}$",
           "{{7*7}}", "\u202e", "nul\x00ctl\x1b", "</script><script>alert(2)</script>")
OUR_TAGS = {"html", "head", "meta", "title", "link", "body", "header", "div", "a", "span", "nav", "main", "section",
            "h1", "h2", "h3", "h4", "h5", "p", "ol", "li", "ul", "article", "code", "dl", "dt", "dd", "details",
            "summary", "table", "tr", "th", "td", "pre", "button", "figure", "figcaption", "strong", "script",
            "footer"}
PLOTLY_MARKUP = re.compile(r"<br>|<extra>|</extra>")


# -- helpers -----------------------------------------------------------------------------------------------------

def timeline_of(path: str | Path) -> dict:
    """Drive a Timeline over a capture exactly as the engine does: batches, every stream it wants, flow records."""
    timeline, table, streams = Timeline(), FlowTable(), StreamBuilder()

    def records(frames):
        for frame in frames:
            timeline.add_flows(frame)
            streams.forget(frame["conn_id"].to_numpy())

    opened = open_capture(str(path))
    try:
        for batch in opened.reader.batches():
            linktypes = np.array([i.linktype for i in opened.reader.interfaces], dtype=np.int64)
            pk = decode_batch(batch, linktypes)
            prepared = prepare(pk, DnsMessages.of(pk), frozenset(timeline.wants))
            info = table.update(pk, prepared.keys)
            row_of = np.full(len(pk), -1, dtype=np.int64)
            row_of[info.rows] = np.arange(len(info.rows))
            timeline.add_batch(pk, info)
            for name in timeline.wants:
                timeline.add_stream(name, streams.build(name, pk, info, row_of, prepared))
            records(table.expire_records())
    finally:
        opened.close()
    records(table.drain_records())
    return timeline.to_dict()


def analysed(path: Path, registry: dict | None = None) -> AnalysisResult:
    """The engine's result with its series (computed here until the engine carries them itself)."""
    result = analyze(str(path), AnalysisOptions(registry={} if registry is None else registry))
    if not getattr(result, "series", None):
        result.series = timeline_of(path)
    return result


def hand_finding(layer: str = "L7", text: str = "finding", frames: tuple[int, ...] = (1, 2, 3),
                 detector: str = "test-hand", window: tuple[float, float] | None = None) -> Finding:
    return Finding(
        detector=detector, layer=layer, severity=Severity.HIGH, title=f"{text} title", summary=f"{text} summary",
        evidence=Evidence(frames=list(frames), flows=[FlowRef("tcp", "10.0.0.1", 40000, "10.0.0.2", 80)],
                          hosts=[text, "10.0.0.2"], window=window, metrics={"names": {text: 1}, "value": text,
                                                                            "list": [text, 2.5]}),
        filter=f'http.host == "{text}"', remedy=f"{text} remedy", owner=f"{text} owner", caveats=[f"{text} caveat"])


def with_findings(result: AnalysisResult, findings: list[Finding]) -> AnalysisResult:
    result.findings = findings
    return result


class DomWalk(HTMLParser):
    """Every element and attribute of a page, and the contents of its JSON script blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.json_blocks: list[str] = []
        self.text: list[str] = []
        self._in_json = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_json = tag == "script" and dict(attrs).get("type") == "application/json"

    def handle_endtag(self, tag: str) -> None:
        self._in_json = False

    def handle_data(self, data: str) -> None:
        (self.json_blocks if self._in_json else self.text).append(data)


def walk(html_text: str) -> DomWalk:
    parser = DomWalk()
    parser.feed(html_text)
    return parser


def strings(value: object):
    """Every string inside a JSON value (keys and values)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# -- timeline ----------------------------------------------------------------------------------------------------

def test_bins_merge_exactly_and_stay_bounded() -> None:
    """Counts survive width doubling exactly; half-open spans stay exact as start/end histograms."""
    bins = _Bins()
    rng = np.random.default_rng(7)
    starts = np.sort(rng.uniform(0, 5000, 3000))
    ends = starts + rng.uniform(0, 30, 3000)
    for chunk in np.array_split(np.arange(3000), 30):
        bins.count("events", starts[chunk])
        bins.count("open", starts[chunk])
        bins.count("close", ends[chunk])
    assert bins.used <= MAX_BINS
    assert sum(bins.series("events")) == 3000
    active = bins.active("open", "close")
    first, last = np.floor((starts - bins.t0) / bins.width), np.floor((ends - bins.t0) / bins.width)
    for i in range(bins.used):
        assert active[i] == np.count_nonzero((first <= i) & (last >= i)), i


def test_reservoir_keeps_a_bounded_uniform_sample() -> None:
    sample = _Reservoir(("t", "v"), cap=100)
    for start in range(0, 10_000, 1000):
        sample.add({"t": list(range(start, start + 1000)), "v": list(range(start, start + 1000))})
    out = sample.to_dict(float)
    assert len(out["t"]) == 100 and out["total"] == 10_000 and out["omitted"] == 9_900
    assert out["t"] == sorted(out["t"]) and max(out["t"]) > 5000  # later rows get in too


def test_timeline_records_each_signature(samples: Path) -> None:
    """Each sample capture's failure is visible in the series its chart draws."""
    storm = timeline_of(samples / "arp_storm.pcap")
    assert sum(storm["L2"]["broadcast_duplicate"]) > 0.9 * sum(storm["L2"]["broadcast"]) > 500
    pmtud = timeline_of(samples / "pmtud_blackhole_tls.pcap")
    stuck = [s for s, a in zip(pmtud["L3"]["retransmissions"]["size"], pmtud["L3"]["retransmissions"]["acked"],
                               strict=True) if not a]
    assert stuck and max(map(int, pmtud["L3"]["never_acked"])) >= min(stuck) > max(map(int, pmtud["L3"]
                                                                                         ["largest_acked"]))
    flood = timeline_of(samples / "syn_flood.pcap")
    top = flood["L4"]["half_open"][0]
    assert top["server"] == "10.0.0.80:80" and max(top["series"]) > 128
    ports = timeline_of(samples / "port_exhaustion.pcap")["L4"]["source_ports"]
    assert ports["connections"] > 1000 and ports["points"]["omitted"] + len(ports["points"]["t"]) == ports[
        "connections"]
    dns = timeline_of(samples / "dns_failure.pcap")["DNS"]
    assert {"SERVFAIL", "REFUSED", "NXDOMAIN"} <= set(dns["rcodes"]) and dns["unanswered"] > 0
    assert sum(dns["rtt_histogram"]["counts"]) == len(dns["rtt"]["t"]) > 0
    tls = timeline_of(samples / "tls_failure.pcap")["TLS"]["outcomes"]
    assert tls["fatal alert"] >= 1 and tls["reset"] >= 1 and tls["no answer"] >= 1 and tls["ServerHello"] >= 1
    slow = timeline_of(samples / "slowloris.pcap")["L7"]["requests"]
    assert max(s for s, c in zip(slow["seconds"], slow["complete"], strict=True) if not c) > 30


def test_timeline_is_json_and_bounded_on_every_sample(samples: Path) -> None:
    for path in sorted(samples.glob("*.pcap*")):
        series = timeline_of(path)
        json.dumps(series, allow_nan=False)
        assert series["bins"] <= MAX_BINS
        assert len(series["L3"]["retransmissions"]["t"]) <= MAX_POINTS
        assert all(len(v) == series["bins"] for v in series["L2"].values() if isinstance(v, list))


# -- files and directory -----------------------------------------------------------------------------------------

def test_report_files_offline_and_inside_the_directory(samples: Path, tmp_path: Path) -> None:
    out = write_report(analysed(samples / "healthy.pcap"), tmp_path / "r", capture_path=str(samples / "healthy.pcap"))
    assert out == (tmp_path / "r").resolve()
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {*PAGES, "findings.json", "findings.csv", "plotly.min.js", "report.css", "report.js"}
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    for page in PAGES:
        text = (out / page).read_text()
        dom = walk(text)
        csp = [a["content"] for t, a in dom.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
        assert csp and "default-src 'none'" in csp[0] and "connect-src 'none'" in csp[0]
        for tag, attrs in dom.tags:
            for name in ("src", "href"):
                target = attrs.get(name)
                assert target is None or "://" not in target, (page, tag, target)
        assert len(dom.json_blocks) >= 1  # every page draws at least one health figure
        for block in dom.json_blocks:
            assert "layout" in json.loads(block)


def test_refuses_to_overwrite_and_never_follows_a_symlink(samples: Path, tmp_path: Path) -> None:
    result = analysed(samples / "healthy.pcap")
    out = tmp_path / "report"
    write_report(result, out, capture_path=None)
    with pytest.raises(ReportExistsError, match="exists and is not empty") as info:
        write_report(result, out, capture_path=None)
    assert "\n" not in str(info.value)
    (out / "notes.txt").write_text("mine")
    write_report(result, out, capture_path=None, force=True)
    assert (out / "notes.txt").read_text() == "mine"  # --force overwrites our files only
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (out / "index.html").unlink()
    (out / "index.html").symlink_to(victim)
    with pytest.raises(UnsafePathError):
        write_report(result, out, capture_path=None, force=True)
    assert victim.read_text() == "untouched"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportExistsError, match="not a directory"):
        write_report(result, tmp_path / "file", capture_path=None, force=True)


@pytest.mark.parametrize(("capture", "expected"), [
    ("captures/healthy.pcap", "healthy"), ("x.pcap.gz", "x"), ("two.if.pcapng", "two.if"), ("-", "stdin"),
    (None, "stdin"), ("../../etc/passwd", "passwd"), ("/tmp/..pcap", "capture"), ("évil name;rm -rf.pcap",
                                                                                  "vil_name_rm_-rf"),
])
def test_default_report_dir(capture: str | None, expected: str) -> None:
    assert default_report_dir(capture) == Path("reports") / expected


# -- escaping ----------------------------------------------------------------------------------------------------

def test_esc_makes_markup_inert_for_html_and_plotly() -> None:
    for text in HOSTILE:
        out = esc(text)
        assert not set(out) & set("<>\"'$") and "\x00" not in out
    assert esc("{{7*7}}") == "{{7*7}}"
    assert esc("x" * 5000).endswith("…[+4400 chars]")


def test_hostile_strings_are_text_everywhere(samples: Path, tmp_path: Path) -> None:
    """T-28: packet strings (Host, User-Agent, DNS names, SNI) and a finding made of hostile text create no element,
    no attribute and no link; the plotly JSON carries them entity-escaped; `{{7*7}}` stays literal."""
    result = analysed(samples / "hostile_strings.pcap")
    t0 = result.capture["first_ts"]
    findings = [hand_finding(layer, text, window=(t0, t0 + 1)) for layer, text in
                zip(("L2", "L3", "L4", "DNS", "TLS", "L7", "L7", "L4", "DNS", "TLS"), HOSTILE, strict=True)]
    findings.append(hand_finding("L7", "<b>" * 16384))  # a 64 KiB value
    out = write_report(with_findings(result, findings), tmp_path / "hostile", capture_path=None)
    seen_text = ""
    for page in PAGES:
        dom = walk((out / page).read_text())
        for tag, attrs in dom.tags:
            assert tag in OUR_TAGS, (page, tag)
            for name, value in attrs.items():
                assert not name.startswith("on") and name not in ("style", "srcdoc"), (page, tag, name)
                assert "javascript:" not in (value or "") and "evil.example" not in (value or ""), (page, tag)
            if tag == "script":
                assert attrs.get("src") in ("plotly.min.js", "report.js") or attrs.get("type") == "application/json"
        seen_text += "".join(dom.text)
        for block in dom.json_blocks:
            for s in strings(json.loads(block)):
                assert "<" not in PLOTLY_MARKUP.sub("", s) and ">" not in PLOTLY_MARKUP.sub("", s), (page, s[:80])
                assert '"' not in s and "$" not in s, (page, s[:80])
    assert "<script>alert(1)</script> title" in seen_text and "{{7*7}} summary" in seen_text
    tls = (out / "TLS.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;\\u002fscript&gt;" in tls  # an SNI of the capture, as a chart category
    assert re.search(r"<b><b>…\[\+\d{5} chars\]", seen_text)  # the 64 KiB value, cut with its length shown


# -- exports -----------------------------------------------------------------------------------------------------

def test_findings_json_and_csv(samples: Path, tmp_path: Path) -> None:
    result = with_findings(analysed(samples / "healthy.pcap"),
                           [hand_finding("L4", "=HYPERLINK(\"http://x\")"), hand_finding("DNS", "plain")])
    out = write_report(result, tmp_path / "r", capture_path=None)
    doc = json.loads((out / "findings.json").read_text())
    assert doc["schema"] == 1 and [f["layer"] for f in doc["findings"]] == ["L4", "DNS"]
    assert doc["ladder"] == [r.to_dict() for r in result.ladder] and doc["narrative"] == result.narrative
    rows = list(csv.DictReader(io.StringIO((out / "findings.csv").read_text())))
    assert [r["layer"] for r in rows] == ["L4", "DNS"]
    assert rows[0]["title"].startswith("'=HYPERLINK") and rows[1]["title"] == "plain title"
    assert rows[0]["frames"] == "1 2 3" and rows[0]["flows"] == "tcp 10.0.0.1:40000 -> 10.0.0.2:80"


# -- evidence extraction -----------------------------------------------------------------------------------------

def frames_of(path: Path) -> dict[int, tuple[int, int, bytes]]:
    """Frame number -> (timestamp ns, link type, bytes) of every packet, read by our reader."""
    opened = open_capture(str(path))
    out = {}
    try:
        for batch in opened.reader.batches():
            lts = [i.linktype for i in opened.reader.interfaces]
            out |= {int(batch.frame[i]): (int(batch.ts_ns[i]), lts[int(batch.iface[i])], batch.packet_bytes(i))
                    for i in range(len(batch))}
    finally:
        opened.close()
    return out


@pytest.mark.parametrize(("capture", "suffix"), [("healthy.pcap", ".pcap"), ("fmt_pcapng_two_if.pcapng", ".pcapng"),
                                                 ("fmt_healthy.pcap.gz", ".pcap")])
def test_extract_evidence_writes_the_frames(samples: Path, tmp_path: Path, capture: str, suffix: str) -> None:
    path = samples / capture
    original = frames_of(path)
    numbers = sorted(original)
    picks = [(numbers[0], numbers[3], numbers[-1]), (numbers[1], numbers[2])]
    findings = [hand_finding("L4", "a", picks[0], detector="../../escape"), hand_finding("L7", "b", picks[1]),
                hand_finding("L3", "none", ())]
    out = write_report(with_findings(analysed(path), findings), tmp_path / "r", capture_path=str(path),
                       extract_evidence=True)
    files = sorted(p.relative_to(out).as_posix() for p in (out / "evidence").iterdir())
    assert files == [f"evidence/escape-1{suffix}", f"evidence/test-hand-1{suffix}"]
    for name, frames in zip(files, picks, strict=True):
        assert list(frames_of(out / name).values()) == [original[f] for f in sorted(frames)]
        if TSHARK:
            listed = subprocess.run([TSHARK, "-r", str(out / name), "-T", "fields", "-e", "frame.len"],
                                    capture_output=True, text=True, check=True).stdout.split()
            assert listed == [str(len(original[f][2])) for f in sorted(frames)]
    page = (out / "L3.html").read_text()
    assert "this finding names no evidence frames" in page
    assert "escape-1" in (out / "findings.csv").read_text()


def test_extract_evidence_needs_a_file(samples: Path, tmp_path: Path) -> None:
    result = with_findings(analysed(samples / "healthy.pcap"), [hand_finding("L4", "a")])
    out = write_report(result, tmp_path / "r", capture_path="-", extract_evidence=True)
    assert not (out / "evidence").exists()
    assert esc(NEEDS_FILE) in (out / "L4.html").read_text()


# -- tshark drill-down -------------------------------------------------------------------------------------------

@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="needs tshark on PATH")
def test_tshark_dissection_of_key_frames(samples: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyshark")
    path = samples / "hostile_strings.pcap"
    result = with_findings(analysed(path), [hand_finding("L7", "a", (1, 2, 3, 4)), hand_finding("L4", "b", (2, 9))])
    dissection = drilldown.dissect(result.findings, str(path), None)
    assert dissection.note == "" and sorted(dissection.frames) == [1, 2, 3, 9]
    assert [layer.name for layer in dissection.frames[1]][:2] == ["eth", "ip"]
    out = write_report(result, tmp_path / "r", capture_path=str(path))
    page = (out / "L7.html").read_text()
    assert "tshark's dissection of frames 1, 2, 3" in page and "<summary>eth</summary>" in page


def test_without_tshark_the_report_says_how_to_get_it(samples: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drilldown.shutil, "which", lambda name: None)
    result = with_findings(analysed(samples / "healthy.pcap"), [hand_finding("L4", "a")])
    out = write_report(result, tmp_path / "r", capture_path=str(samples / "healthy.pcap"))
    assert esc(drilldown.NO_TSHARK) in (out / "L4.html").read_text()



def test_empty_and_partial_captures(tmp_path: Path) -> None:
    """A capture with no packets still gets every page; a damaged one says on every page that it is partial."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 1_700_000_000, 0, 60, 60) + bytes(60)
    (tmp_path / "empty.pcap").write_bytes(header)
    (tmp_path / "cut.pcap").write_bytes(header + record + record[:30])
    empty = write_report(analysed(tmp_path / "empty.pcap"), tmp_path / "e", capture_path=None)
    assert "nothing to draw" in (empty / "L3.html").read_text()
    cut = write_report(analysed(tmp_path / "cut.pcap"), tmp_path / "c", capture_path=None)
    assert all("Partial analysis:" in (cut / page).read_text() for page in PAGES)
