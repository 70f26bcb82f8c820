"""The report in a real browser: headless Chromium driven over the DevTools protocol (stdlib only).

Chromium speaks the DevTools protocol over a pipe (`--remote-debugging-pipe`: NUL-terminated JSON on fds 3 and 4),
so no websocket library is needed. Over reports of the sample captures, every page must load offline (name
resolution is disabled and any request that is not file: or data: fails the test) with no console error, no
uncaught exception and no CSP violation; every chart must render (plotly's SVG inside each chart element); every
link between pages must resolve to a file and, with a fragment, to an element of it; and the hostile capture, whose
Host, User-Agent, DNS names and SNI carry script, event-handler and `javascript:` markup, must produce no script
element, no handler attribute, no `javascript:` URL and no dialog. A screenshot of an index is kept in
`reports/test-artifacts/index.png` to be looked at.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from test_report import HOSTILE, analysed, hand_finding, with_findings

from pcapsense.detector import load_detectors
from pcapsense.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "reports" / "test-artifacts"
PAGES = ("index.html", "L2.html", "L3.html", "L4.html", "DNS.html", "TLS.html", "L7.html")
CAPTURES = ("healthy.pcap", "arp_storm.pcap", "pmtud_blackhole_tls.pcap", "syn_flood.pcap", "dns_failure.pcap",
            "tls_failure.pcap", "slowloris.pcap")
SCREENSHOT_CAPTURE = "pmtud_blackhole_tls.pcap"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--remote-debugging-pipe")
TIMEOUT_S = 30.0
# Chromium reads DevTools commands on fd 3 and answers on fd 4: put the pipe ends there, then become Chromium.
TRAMPOLINE = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
              "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
LOCAL_SCHEMES = ("file", "data", "about", "blob")
CHARTS_DRAWN = """(() => {
  const charts = [...document.querySelectorAll('div.chart')];
  return {total: charts.length, drawn: charts.filter(c => c.querySelector('svg.main-svg')).map(c => c.id)};
})()"""
LINKS = "[...document.querySelectorAll('a[href]')].map(a => a.href)"
URL_ATTRIBUTES = ("href", "xlink:href", "src", "action", "formaction", "data", "poster", "background")
HOVER_POINTS = 200  # points hovered per chart
HOVER_ALL = f"""(() => {{
  const labels = [];
  for (const chart of document.querySelectorAll('div.chart')) {{
    (chart.data || []).forEach((trace, curve) => {{
      const n = Math.min((trace.x || trace.y || []).length, {HOVER_POINTS});
      for (let point = 0; point < n; point++) {{
        Plotly.Fx.hover(chart, [{{curveNumber: curve, pointNumber: point}}]);
        const layer = chart.querySelector('.hoverlayer');
        if (layer) labels.push(layer.innerHTML);
      }}
    }});
  }}
  return labels;
}})()"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends must not already be fd 3 or 4, or moving one there would clobber the other
        to_chrome_r, from_chrome_w = (_above_4(fd) for fd in (to_chrome_r, from_chrome_w))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), CHROMIUM, *FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1366, height=900, deviceScaleFactor=1,
                  mobile=False)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            os.write(self._to_chrome, json.dumps({"id": -1, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message; events are kept in `events` (dialogs are dismissed at once so nothing blocks)."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise OSError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Page.javascriptDialogOpening":
                os.write(self._to_chrome, json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog", "params": {
                    "accept": False}, "sessionId": self.session}).encode() + b"\0")
        return message

    def load(self, url: str) -> list[dict[str, Any]]:
        """Navigate and wait for the load event; the events the page produced."""
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            self._read(max(deadline - time.monotonic(), 0.1))
        return self.events

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (user activation, as the clipboard API needs) in the middle of the element."""
        x, y = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                             "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1366, "height": height, "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


def _above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, errors logged by the browser (CSP, failed loads), non-local requests,
    and dialogs."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent" and urlparse(params["request"]["url"]).scheme not in LOCAL_SCHEMES:
            found.append(f"network: {params['request']['url']}")
        elif method == "Page.javascriptDialogOpening":
            found.append(f"dialog: {params.get('message')}")
    return found


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def elements(html_text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html_text)
    return parser.elements


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def reports(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reports of the sample captures with the installed detectors, plus the hostile capture with hostile findings."""
    registry = load_detectors()
    out = tmp_path_factory.mktemp("reports")
    made = {name: write_report(analysed(samples / name, registry), out / name, capture_path=str(samples / name),
                               extract_evidence=True)
            for name in CAPTURES}
    hostile = samples / "hostile_strings.pcap"
    result = analysed(hostile, registry)
    t0 = result.capture["first_ts"]
    result = with_findings(result, [*result.findings, *(hand_finding(layer, text, (1, 2), window=(t0, t0 + 0.5))
                                                        for layer, text in zip(("L7", "DNS", "TLS", "L4", "L3"),
                                                                               HOSTILE, strict=False))])
    made["hostile_strings.pcap"] = write_report(result, out / "hostile", capture_path=str(hostile))
    return made


def check_page(browser: Browser, page: Path) -> tuple[list[str], list[str]]:
    """Load one page; its problems, and the links it holds."""
    found = problems(browser.load(page.as_uri()))
    charts = browser.evaluate(CHARTS_DRAWN)
    if len(charts["drawn"]) != charts["total"]:
        found.append(f"charts drawn: {charts['drawn']} of {charts['total']}")
    return found, browser.evaluate(LINKS)


def test_every_page_loads_offline_renders_and_links(browser: Browser, reports: dict[str, Path]) -> None:
    failures = []
    for capture, report in reports.items():
        for name in PAGES:
            page = report / name
            found, links = check_page(browser, page)
            failures += [f"{capture}/{name}: {p}" for p in found]
            for link in links:
                url = urlparse(link)
                if url.scheme != "file":
                    failures.append(f"{capture}/{name}: link leaves the report: {link}")
                    continue
                target = Path(unquote(url.path))
                if not target.is_file() or report.resolve() not in target.resolve().parents:
                    failures.append(f"{capture}/{name}: broken link {link}")
                elif url.fragment and f'id="{url.fragment}"' not in target.read_text(errors="replace"):
                    failures.append(f"{capture}/{name}: no element #{url.fragment} in {target.name}")
    assert not failures, "\n".join(failures)


def test_hostile_strings_make_no_markup_in_the_live_dom(browser: Browser, reports: dict[str, Path]) -> None:
    """After the charts are drawn, every details element opened and every point hovered (hover labels are drawn
    from packet text), the DOM holds nothing the data could have made, and no dialog opened."""
    report = reports["hostile_strings.pcap"]
    failures = []
    for name in PAGES:
        failures += [f"{name}: {p}" for p in check_page(browser, report / name)[0]]
        browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        hover = "".join(browser.evaluate(HOVER_ALL))
        dom = browser.evaluate("document.documentElement.outerHTML")
        for tag, attrs in elements(dom + hover):
            for attr, value in attrs.items():
                if attr.startswith("on") or (attr in URL_ATTRIBUTES and "javascript:" in (value or "").lower()):
                    failures.append(f"{name}: <{tag} {attr}={value!r}>")
            if tag == "script" and attrs.get("src") not in ("plotly.min.js", "report.js") and attrs.get(
                    "type") != "application/json":
                failures.append(f"{name}: script element {attrs}")
            if tag in ("img", "iframe", "object", "embed", "base", "form"):
                failures.append(f"{name}: <{tag}> from data")
            if tag == "a" and attrs.get("href") and ("://" in attrs["href"] or attrs["href"].startswith("//")):
                failures.append(f"{name}: external link {attrs['href']}")
        failures += [f"{name}: {p}" for p in problems(browser.events)]
    assert not failures, "\n".join(failures)
    browser.load((report / "L7.html").as_uri())
    assert f"{HOSTILE[0]} title" in browser.evaluate("document.body.innerText")  # shown, as text


def test_copy_button_copies_the_filter_as_text(browser: Browser, reports: dict[str, Path]) -> None:
    """The Wireshark filter lands on the clipboard exactly as the detector wrote it, markup characters included."""
    browser.call("Browser.grantPermissions", permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    browser.load((reports["hostile_strings.pcap"] / "L7.html").as_uri())
    browser.click("button.copy")
    copied = browser.call("Runtime.evaluate", session=True, expression="navigator.clipboard.readText()",
                          awaitPromise=True, returnByValue=True)["result"]["value"]
    assert copied == f'http.host == "{HOSTILE[0]}"'
    assert browser.evaluate("document.querySelector('button.copy').textContent") == "Copied"


def test_index_screenshot(browser: Browser, reports: dict[str, Path]) -> None:
    """Keep a picture of an index to look at (reports/ is git-ignored)."""
    assert not problems(browser.load((reports[SCREENSHOT_CAPTURE] / "index.html").as_uri()))
    browser.screenshot(ARTIFACTS / "index.png")
    assert (ARTIFACTS / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
