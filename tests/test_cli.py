"""The CLI contract: JSON document shape, exit codes, --fail-on, --set validation, `detectors`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    proc = run("analyze", str(samples / "healthy.pcap"), str(samples / "fmt_sll.pcap"), "--format", "json", "-q")
    docs = json.loads(proc.stdout)
    assert [Path(d["capture"]["path"]).name for d in docs] == ["healthy.pcap", "fmt_sll.pcap"]


def test_text_summary_walks_the_ladder(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"))
    assert proc.returncode == 0
    assert "Triage ladder (bottom-up):" in proc.stdout
    assert "the L4 handshake completes" in proc.stdout


def test_quiet_prints_nothing(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), "-q")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_unknown_detector_or_field_is_a_usage_error(samples: Path) -> None:
    proc = run("analyze", str(samples / "healthy.pcap"), "--set", "no-such-detector.x=1")
    assert proc.returncode == 2 and "unknown detector 'no-such-detector'" in proc.stderr
    proc = run("analyze", str(samples / "healthy.pcap"), "--set", "garbage")
    assert proc.returncode == 2 and "expected DETECTOR.FIELD=VALUE" in proc.stderr
    registry = load_detectors()
    if registry:
        det = next(iter(registry))
        proc = run("analyze", str(samples / "healthy.pcap"), "--set", f"{det}.no_such_field=1")
        assert proc.returncode == 2 and "has no threshold 'no_such_field'" in proc.stderr


def test_detectors_listing_matches_the_registry() -> None:
    proc = run("detectors", "--format", "json")
    listed = json.loads(proc.stdout)
    registry = load_detectors()
    assert [d["id"] for d in listed] == list(registry)
    for entry in listed:
        assert entry["layer"] in ("L2", "L3", "L4", "DNS", "TLS", "L7")
        assert all(t["source"] for t in entry["thresholds"]), entry["id"]


def test_module_entry_point_and_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and "pcapsense" in proc.stdout
