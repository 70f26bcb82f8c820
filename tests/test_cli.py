"""The CLI contract: JSON document shape, exit codes, --fail-on, --set validation, `detectors`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pcapsense.console import SINGLE_THREADED_MATH
from pcapsense.detector import load_detectors


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapsense", *args], capture_output=True, text=True, timeout=120)


def test_json_document_shape(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), "--format", "json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1 and doc["pcapsense"]
    cap = doc["capture"]
    expected = {"path", "format", "link_types", "packets", "bytes", "first_ts", "last_ts", "partial", "warnings"}
    assert expected <= set(cap)
    assert cap["packets"] == 51 and cap["partial"] is False
    assert [r["rung"] for r in doc["ladder"]] == ["L2", "L3", "L4", "DNS", "TLS", "L7"]
    assert all(r["status"] == "clean" for r in doc["ladder"])
    assert doc["findings"] == []
    assert doc["stats"]["tcp"]["connections"] == 2


def test_multiple_captures_give_a_json_array(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), str(samples / "fmt_sll.pcap"), "--format", "json", "-q",
               "--no-report")
    docs = json.loads(proc.stdout)
    assert [Path(d["capture"]["path"]).name for d in docs] == ["healthy.pcap", "fmt_sll.pcap"]


def test_text_summary_walks_the_ladder_and_writes_the_report(samples: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pcapsense", "analyze", str(samples / "healthy.pcap")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Triage ladder (bottom-up):" in proc.stdout
    assert "the L4 handshake completes" in proc.stdout
    assert (tmp_path / "reports" / "healthy" / "index.html").is_file()  # the default report directory
    assert f"report: {tmp_path / 'reports' / 'healthy' / 'index.html'}" in proc.stderr


def test_quiet_prints_nothing(samples: Path, tmp_path: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), "-q", "-o", str(tmp_path / "r"))
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert (tmp_path / "r" / "L4.html").is_file()


def test_unknown_detector_or_field_is_a_usage_error(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), "--no-report", "--set", "no-such-detector.x=1")
    assert proc.returncode == 2 and "unknown detector 'no-such-detector'" in proc.stderr
    proc = run("analyze", str(samples / "healthy.pcap"), "--no-report", "--set", "garbage")
    assert proc.returncode == 2 and "expected DETECTOR.FIELD=VALUE" in proc.stderr
    registry = load_detectors()
    if registry:
        det = next(iter(registry))
        proc = run("analyze", str(samples / "healthy.pcap"), "--no-report", "--set", f"{det}.no_such_field=1")
        assert proc.returncode == 2 and "has no threshold 'no_such_field'" in proc.stderr


def test_detectors_listing_matches_the_registry() -> None:
    proc = run("detectors", "--format", "json")
    listed = json.loads(proc.stdout)
    registry = load_detectors()
    assert [d["id"] for d in listed] == list(registry)
    for entry in listed:
        assert entry["layer"] in ("L2", "L3", "L4", "DNS", "TLS", "L7")
        assert all(t["source"] for t in entry["thresholds"]), entry["id"]


def test_fail_on(samples: Path) -> None:
    flood = str(samples / "syn_flood.pcap")
    assert run("analyze", flood, "--no-report", "-q", "--fail-on", "high").returncode == 1
    assert run("analyze", flood, "--no-report", "-q", "--fail-on", "critical").returncode == 0
    assert run("analyze", str(samples / "healthy.pcap"), "--no-report", "-q", "--fail-on", "info").returncode == 0


def test_set_changes_a_detector(samples: Path) -> None:
    flood = str(samples / "syn_flood.pcap")
    doc = json.loads(run("analyze", flood, "--no-report", "--format", "json").stdout)
    assert any(f["detector"] == "syn-flood" for f in doc["findings"])
    doc = json.loads(run("analyze", flood, "--no-report", "--format", "json",
                         "--set", "syn-flood.min_half_open=100000", "--set", "syn-flood.min_unanswered=100000").stdout)
    assert not any(f["detector"] == "syn-flood" for f in doc["findings"])


def test_module_entry_point_and_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and "pcapsense" in proc.stdout


def test_analyze_collects_young_garbage_less_often(samples: Path) -> None:
    """`analyze` raises the collector's young-generation threshold for its process (see cli.GC_YOUNG_OBJECTS)."""
    code = ("import gc, sys\nfrom pcapsense import cli\nsys.argv = ['pcapsense', 'analyze', sys.argv[1], '-q', "
            "'--no-report']\ntry:\n    cli.main()\nexcept SystemExit:\n    print(gc.get_threshold()[0], "
            "cli.GC_YOUNG_OBJECTS)")
    proc = subprocess.run([sys.executable, "-c", code, str(samples / "healthy.pcap")], capture_output=True,
                          text=True, timeout=120)
    threshold, wanted = proc.stdout.split()
    assert threshold == wanted != "700"


def test_console_script_freezes_the_heap_on_its_way_out(samples: Path) -> None:
    """The console script and `python -m pcapsense` run `console.run`, which freezes every object once the
    command has finished, so the interpreter's exit collections skip them; the command's output and exit code
    are untouched."""
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pcapsense"] == "pcapsense.console:run"
    code = ("import atexit, gc, sys\nfrom pcapsense import console\n"
            "atexit.register(lambda: print(gc.get_freeze_count()))\n"
            "sys.argv = ['pcapsense', 'analyze', sys.argv[1], '-q', '--no-report', '--fail-on', 'info']\nconsole.run()")
    proc = subprocess.run([sys.executable, "-c", code, str(samples / "syn_flood.pcap")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # --fail-on still decides the exit code
    assert int(proc.stdout) > 10_000
    proc = run("analyze", str(samples / "healthy.pcap"), "--format", "json", "--no-report")
    assert proc.returncode == 0 and json.loads(proc.stdout)["capture"]["packets"] == 51


def test_console_script_keeps_numpy_single_threaded(samples: Path) -> None:
    """numpy is imported after console.run has asked its math libraries for one thread (their thread pools spin
    at start, taking a core from the analysis): the process runs one thread; a setting the user made is kept."""
    code = ("import os, sys\nfrom pcapsense import console\nimported = 'numpy' in sys.modules\n"
            "sys.argv = ['pcapsense', 'detectors']\ntry:\n    console.run()\nfinally:\n"
            "    threads = len(os.listdir('/proc/self/task')) if os.path.isdir('/proc/self/task') else 1\n"
            "    print(imported, os.environ['OPENBLAS_NUM_THREADS'], threads, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k not in SINGLE_THREADED_MATH}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.split() == ["False", "1", "1"]  # numpy came with the CLI, after the setting
    env["OPENBLAS_NUM_THREADS"] = "3"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.stderr.split()[:2] == ["False", "3"]


def test_json_output_is_strict_json_on_every_sample(samples: Path) -> None:
    """No NaN or Infinity (Python's extension, which jq and browsers reject) in any document."""
    from pcapsense.engine import AnalysisOptions, analyze
    from pcapsense.output.jsondoc import dumps

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} in the JSON document")

    captures = sorted(p for p in samples.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
    assert len(captures) >= 40
    for path in captures:
        json.loads(dumps(analyze(str(path), AnalysisOptions()).to_dict()), parse_constant=reject)


def test_json_rendering_makes_numbers_plain_and_finite() -> None:
    import numpy as np

    from pcapsense.output.jsondoc import dumps

    doc = {"nan": float("nan"), "inf": [float("inf"), -np.inf], "np": (np.int64(3), np.float32(0.5)), "ok": 1.5}
    assert json.loads(dumps(doc)) == {"nan": None, "inf": [None, None], "np": [3, 0.5], "ok": 1.5}
