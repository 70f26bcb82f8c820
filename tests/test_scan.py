"""Batch scanning: a LocalCluster scan of a messy archive, resume after SIGKILL, worker death, `findings` exports.

The archive holds what real ones do: nested folders, compressed and misnamed captures, damaged ones, text, a FIFO,
symlink loops, an undecodable and a hostile file name. A scan must catalogue each capture exactly once, survive
being killed at any moment, keep going when a capture or a worker fails, and never let a name inject HTML.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import html
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner, Result

from pcapsense.report.outdir import SAFE_NAME as UNSAFE
from pcapsense.scan import cluster, runner
from pcapsense.scan.catalog import FAILED, OK, PARTIAL, Outcome, one_line
from pcapsense.scan.cli import EXPORT, _csv_cell, _Progress, findings, scan
from pcapsense.scan.reports import report_name

ROOT = Path(__file__).resolve().parent.parent
CAP = 1_000_000  # --max-decompressed for every scan here: the gzip "bomb" inflates past it, the rest do not
HOSTILE = '<b onmouseover="x">hostile<i>&amp;.pcap'  # no "/": it is one file name
UNDECODABLE = os.fsdecode(b"caf\xe9.pcap")
KILL_AFTER = 8  # analysed captures committed before the scan is killed
COPIES = 1  # copies of every sample capture in the kill-and-resume archive


def build_archive(root: Path, samples: Path, copies: int = 0) -> dict[str, str]:
    """Write the archive under `root`; returns the status each entry must end with, by real path under `root`."""
    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def sample(name: str) -> bytes:
        return (samples / name).read_bytes()

    put("healthy.pcap", sample("healthy.pcap"))
    put("nested/deeper/syn_flood.pcap", sample("syn_flood.pcap"))
    put("nested/deeper/tls_failure", sample("tls_failure.pcap"))  # no extension: recognised by magic
    put("nested/fmt_healthy.pcap.gz", sample("fmt_healthy.pcap.gz"))
    put("nested/dns_failure.dat", gzip.compress(sample("dns_failure.pcap"), mtime=0))  # gzip, misnamed
    put("pcapng/asym_routing_ifaces.pcapng", sample("asym_routing_ifaces.pcapng"))
    put(HOSTILE, sample("tls_failure.pcap"))
    put(UNDECODABLE, sample("arp_unanswered.pcap"))
    healthy = sample("healthy.pcap")
    put("corrupt.pcap", healthy[: len(healthy) // 2] + b"\xff" * 64)  # damaged mid-file: partial
    put("bomb.pcap.gz", gzip.compress(sample("port_exhaustion.pcap"), mtime=0))  # inflates past CAP: partial
    put("header_only.pcap", healthy[:10])  # a pcap magic and nothing usable: failed
    put("notes.txt", b"not a capture\n")
    put("fake.pcap", b"a .pcap name does not make a capture\n")
    put("log.gz", gzip.compress(b"a compressed log, not a capture\n"))
    os.symlink("nested/deeper/syn_flood.pcap", root / "link.pcap")  # the same capture twice: catalogued once
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink("..", root / "nested/up")
    os.mkfifo(root / "pipe.pcap")
    for n in range(copies):
        for capture in sorted(samples.glob("*.pcap*")):
            put(f"bulk/copy{n}/{capture.name}", capture.read_bytes())
    expected = {name: OK for name in ("healthy.pcap", "nested/deeper/syn_flood.pcap", "nested/deeper/tls_failure",
                                      "nested/fmt_healthy.pcap.gz", "nested/dns_failure.dat", HOSTILE,
                                      "pcapng/asym_routing_ifaces.pcapng", "caf\\xe9.pcap")}
    expected |= {"corrupt.pcap": PARTIAL, "bomb.pcap.gz": PARTIAL, "header_only.pcap": FAILED, "pipe.pcap": FAILED,
                 "loop_a": FAILED, "loop_b": FAILED, "nested/up": FAILED}
    expected |= {f"bulk/copy{n}/{c.name}": OK for n in range(copies) for c in samples.glob("*.pcap*")}
    return expected


def scan_args(root: Path, work: Path, workers: int, *extra: str) -> list[str]:
    return [str(root), "--workers", str(workers), "--catalog", str(work / "catalog.sqlite"), "-o", str(work / "out"),
            "--max-decompressed", str(CAP), *extra]


def invoke(command: Any, args: list[str]) -> Result:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def read_catalog(catalog: Path, root: Path) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Captures by path relative to `root`, and the multiset of findings (as JSON naming that relative path)."""
    prefix = os.path.realpath(root) + os.sep
    db = sqlite3.connect(catalog)
    db.row_factory = sqlite3.Row
    captures: dict[str, dict[str, Any]] = {}
    for row in db.execute("SELECT * FROM captures"):
        data = dict(row)
        rel = data.pop("path").removeprefix(prefix)
        assert rel not in captures, f"{rel} catalogued twice"
        captures[rel] = data
    found: Counter[str] = Counter()
    for row in db.execute("SELECT c.path, f.* FROM findings f JOIN captures c ON c.id = f.capture_id"):
        data = {k: v for k, v in dict(row).items() if k not in ("id", "capture_id")}
        found[json.dumps(data, sort_keys=True).replace(prefix, "")] += 1
    db.close()
    return captures, found


def analysed_count(catalog: Path) -> int:
    """Captures committed with a content hash (the refused entries, recorded first, have none)."""
    if not catalog.exists():
        return 0
    with contextlib.closing(sqlite3.connect(catalog)) as db:  # read-write: it may have to recover a killed writer's WAL
        try:
            return db.execute("SELECT count(*) FROM captures WHERE sha256 IS NOT NULL").fetchone()[0]
        except sqlite3.OperationalError:  # schema not created yet
            return 0


@pytest.fixture(scope="module")
def scanned(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str], Result]:
    """The archive, scanned once on a LocalCluster of 2 worker processes: (root, work dir, expected, result)."""
    root, work = tmp_path_factory.mktemp("archive"), tmp_path_factory.mktemp("scan")
    expected = build_archive(root, samples)
    result = invoke(scan, scan_args(root, work, 2))
    return root, work, expected, result


def test_local_cluster_scan_catalogues_each_entry_once(scanned: tuple[Path, Path, dict[str, str], Result]) -> None:
    root, work, expected, result = scanned
    assert result.exit_code == 1, result.output  # completed, with failed captures
    assert "3 other files ignored" in result.stderr and "on 2 local worker processes" in result.stderr
    captures, _ = read_catalog(work / "catalog.sqlite", root)
    assert {rel: row["status"] for rel, row in captures.items()} == expected
    for rel, row in captures.items():
        assert row["error"] is None or ("\n" not in row["error"] and "Traceback" not in row["error"])
        if row["status"] != FAILED:
            assert row["sha256"] and row["packets"] is not None and row["analyzer_version"], rel
    reasons = {rel: captures[rel]["error"] for rel in ("bomb.pcap.gz", "header_only.pcap", "pipe.pcap", "loop_a",
                                                       "nested/up", "corrupt.pcap")}
    assert "exceeds the cap" in reasons["bomb.pcap.gz"]
    assert "truncated pcap file header" in reasons["header_only.pcap"]
    assert "not a regular file (FIFO)" in reasons["pipe.pcap"]
    assert "symlink loop" in reasons["loop_a"] and "symlink loop" in reasons["nested/up"]
    assert "record #" in reasons["corrupt.pcap"]


def test_reports_match_the_catalog(scanned: tuple[Path, Path, dict[str, str], Result]) -> None:
    _, work, _, _ = scanned
    db = sqlite3.connect(work / "catalog.sqlite")
    counts = dict(db.execute("SELECT c.path, count(f.id) FROM captures c LEFT JOIN findings f "
                             "ON f.capture_id = c.id WHERE c.status != 'failed' GROUP BY c.id"))
    reports = sorted((work / "out").glob("*/findings.json"))
    assert len(reports) == len(counts)  # one report per analysed capture, none for failed ones
    for report in reports:
        assert UNSAFE.search(report.parent.name) is None
        doc = json.loads(report.read_text())
        assert counts[one_line(doc["capture"]["path"])] == len(doc["findings"])


def test_fleet_index_is_offline_and_escaped(scanned: tuple[Path, Path, dict[str, str], Result]) -> None:
    _, work, _, _ = scanned
    out = work / "out"
    page = (out / "index.html").read_text()
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert re.findall(r"<script src=\"([^\"]*)\"", page) == ["plotly.min.js"]
    assert "cdn" not in page.lower()
    assert HOSTILE not in page and "<b onmouseover" not in page and "<i>&amp;" not in page
    assert html.escape(HOSTILE) in page
    links = [unquote(html.unescape(href)) for href in re.findall(r'href="([^"]+)"', page)]
    assert links and all((out / link).is_file() for link in links)
    figure = re.search(r"^const fig = (.*);$", page, re.MULTILINE)
    if figure:  # a heat map is drawn when some detector fired; its labels are escaped for plotly.js too
        data = json.loads(figure.group(1))
        labels = data["layout"]["yaxis"]["ticktext"] + [t for row in data["data"][0]["text"] for t in row]
        assert not any("<b " in label or "<i>" in label for label in labels)
        assert any(html.escape(HOSTILE, quote=False) in label for label in labels)  # plotly.js has no &quot;
    assert "Failed captures (5)" in page and "not a regular file (FIFO)" in page


def test_rerun_skips_unchanged_captures_and_rescan_forces(samples: Path, tmp_path: Path) -> None:
    root, work = tmp_path / "archive", tmp_path / "work"
    for name in ("healthy.pcap", "dns_failure.pcap", "tls_failure.pcap"):
        (root / "x").mkdir(parents=True, exist_ok=True)
        (root / "x" / name).write_bytes((samples / name).read_bytes())
    (root / "header_only.pcap").write_bytes((samples / "healthy.pcap").read_bytes()[:10])

    def run(*extra: str) -> tuple[int, int]:
        result = invoke(scan, scan_args(root, work, 1, *extra))
        assert result.exit_code == 1, result.output
        match = re.search(r"This run analysed (\d+) in .*, (\d+) unchanged", result.stdout)
        assert match, result.stdout
        return int(match.group(1)), int(match.group(2))

    assert run() == (4, 0)
    assert run() == (0, 4)  # the failed capture, hashed, is not retried either
    touched = root / "x" / "healthy.pcap"
    os.utime(touched, (1_000_000_000, 1_000_000_000))
    assert run() == (0, 4)  # mtime moved, content did not: the hash says so
    captures, _ = read_catalog(work / "catalog.sqlite", root)
    assert captures["x/healthy.pcap"]["mtime"] == 1_000_000_000
    (root / "x" / "dns_failure.pcap").write_bytes((samples / "dns_healthy.pcap").read_bytes())
    assert run() == (1, 3)
    for report in (work / "out").glob("*tls_failure*"):
        for file in report.iterdir():
            file.unlink()
    assert run() == (1, 3)  # a missing report is written again
    assert run("--rescan") == (4, 0)
    captures, found = read_catalog(work / "catalog.sqlite", root)
    assert len(captures) == 4 and all(n == 1 for n in found.values())


def test_kill_and_resume_equals_an_uninterrupted_scan(samples: Path, tmp_path: Path) -> None:
    reference_root, killed_root = tmp_path / "reference", tmp_path / "killed"
    expected = build_archive(reference_root, samples, COPIES)
    assert build_archive(killed_root, samples, COPIES) == expected
    reference, killed = tmp_path / "reference-work", tmp_path / "killed-work"
    assert invoke(scan, scan_args(reference_root, reference, 1)).exit_code == 1

    command = [sys.executable, "-m", "pcapsense.scan", "scan", *scan_args(killed_root, killed, 2)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while analysed_count(killed / "catalog.sqlite") < KILL_AFTER:
            assert proc.poll() is None, "the scan ended before it could be killed"
            assert time.monotonic() < deadline, "the scan committed nothing in 240 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # its worker processes, if they are still exiting
            os.killpg(proc.pid, signal.SIGKILL)
    analysable = sum(status != FAILED for status in expected.values())
    committed = analysed_count(killed / "catalog.sqlite")
    assert KILL_AFTER <= committed < analysable, f"not killed mid-way: {committed} of {analysable} committed"

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 1, resumed.stderr
    assert "unchanged since the catalog" in resumed.stderr and "Traceback" not in resumed.stderr

    ref_captures, ref_findings = read_catalog(reference / "catalog.sqlite", reference_root)
    got_captures, got_findings = read_catalog(killed / "catalog.sqlite", killed_root)
    assert {rel: row["status"] for rel, row in got_captures.items()} == expected, resumed.stderr
    same = ("status", "sha256", "packets", "size", "duration_s", "first_ts", "last_ts", "analyzer_version")
    for rel, row in ref_captures.items():
        assert {k: got_captures[rel][k] for k in same} == {k: row[k] for k in same}, rel
    assert got_findings == ref_findings
    assert sum(ref_findings.values()) > 0
    assert len(list((killed / "out").glob("*/findings.json"))) == len(list((reference / "out").glob("*/findings.json")))


def die_when_marked(task: runner.Task) -> Outcome:
    """Stands in for a capture that crashes its worker process (a segfault, an OOM kill): count, then exit."""
    if "die-here" in task.path:
        with open(task.path + ".attempts", "a") as fh:
            fh.write("x")
        os._exit(1)
    return runner.analyze_task(task)


def test_a_worker_that_dies_is_retried_once_then_recorded_failed(samples: Path, tmp_path: Path) -> None:
    paths = {name: tmp_path / name for name in ("healthy.pcap", "die-here.pcap", "tls_failure.pcap")}
    for name, path in paths.items():
        path.write_bytes((samples / name.replace("die-here", "healthy")).read_bytes())
    tasks = [runner.Task(str(p), str(p), report_name(p.name, str(p)), str(tmp_path / "out"), None, CAP)
             for p in paths.values()]
    with cluster.dask_client(2, None) as client:
        outcomes = {o["key"]: o for o in cluster.run_on_dask(tasks, client, "test", work=die_when_marked)}
    dead = outcomes.pop(str(paths["die-here.pcap"]))
    assert dead["status"] == FAILED and "died 2 times" in dead["error"]
    assert Path(str(paths["die-here.pcap"]) + ".attempts").read_text() == "xx"
    assert {o["status"] for o in outcomes.values()} == {OK}


def findings_of(scanned: tuple[Path, Path, dict[str, str], Result], *args: str) -> Result:
    result = invoke(findings, ["--catalog", str(scanned[1] / "catalog.sqlite"), *args])
    assert result.exit_code == 0, result.output
    return result


def test_findings_jsonl_and_filters(scanned: tuple[Path, Path, dict[str, str], Result]) -> None:
    records = [json.loads(line) for line in findings_of(scanned, "--format", "jsonl").stdout.splitlines()]
    db = sqlite3.connect(scanned[1] / "catalog.sqlite")
    assert len(records) == db.execute("SELECT count(*) FROM findings").fetchone()[0] > 0
    assert all(list(r) == list(EXPORT) and r["capture_sha256"] for r in records)
    times = [r["time"] for r in records if r["time"]]
    assert times == sorted(times) and all(t.endswith("+00:00") for t in times)

    def count(*args: str) -> int:
        return len(findings_of(scanned, "--format", "jsonl", *args).stdout.splitlines())

    severities = Counter(r["severity"] for r in records)
    assert count("--severity", "high") == severities["high"] + severities["critical"]
    detector = records[0]["detector"]
    assert count("--detector", detector) == sum(r["detector"] == detector for r in records)
    layers = Counter(r["layer"] for r in records)
    assert count("--layer", "l2", "--layer", "DNS") == layers["L2"] + layers["DNS"]
    latest = max(times)
    assert 0 < count("--since", latest) <= len(records)
    assert count("--since", "2999-01-01") == 0


def test_findings_csv_and_table(scanned: tuple[Path, Path, dict[str, str], Result]) -> None:
    rows = list(csv.reader(io.StringIO(findings_of(scanned, "--format", "csv").stdout)))
    jsonl = findings_of(scanned, "--format", "jsonl").stdout.splitlines()
    assert rows[0] == list(EXPORT) and len(rows) == len(jsonl) + 1
    assert _csv_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")" and _csv_cell(["a"]) == '["a"]'
    table = findings_of(scanned).stdout.splitlines()
    assert table[0].split() == ["time", "severity", "layer", "detector", "title", "capture"]
    assert len(table) == len(jsonl) + 1


def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "text.sqlite").write_text("not sqlite at all " * 100)
    for command, args in ((findings, ["--catalog", str(tmp_path / "missing.sqlite")]),
                          (findings, ["--catalog", str(tmp_path / "text.sqlite")]),
                          (findings, ["--since", "yesterday-ish"]),
                          (scan, [str(tmp_path / "no-such-dir")])):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_report_names_never_collide_or_escape() -> None:
    names = {report_name(rel, key) for rel, key in (("a b.pcap", "/x/a b.pcap"), ("a_b.pcap", "/x/a_b.pcap"),
                                                    ("../../etc", "/y/../../etc"), ("a b.pcap", "/z/a b.pcap"))}
    assert len(names) == 4 and all(UNSAFE.search(n) is None and not n.startswith(".") for n in names)


def test_progress_line_shows_done_total_bytes_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    progress = _Progress(captures=4, nbytes=4 * 2**20, shown=True)
    for _ in range(4):
        progress.advance(2**20)
    progress.finish()
    line = capsys.readouterr().err.strip().split("\r")[-1]
    assert "4/4 captures" in line and "4.0/4.0 MiB" in line and "captures/s" in line and "ETA 0:00:00" in line
    silent = _Progress(captures=1, nbytes=1, shown=False)
    silent.advance(1)
    silent.finish()
    assert capsys.readouterr().err == ""  # not a terminal: no progress line
