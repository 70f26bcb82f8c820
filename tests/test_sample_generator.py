"""The committed sample captures are exactly what the generator produces, and the manifest tells the truth.

Every other test trusts `sample_pcaps/manifest.json` as ground truth, so this file guards it: regeneration is
byte-identical (no wall clock, no unseeded randomness, deterministic gzip), nothing stale is committed, the
manifest follows its contract, and, where tshark is installed, Wireshark reads the same packet counts and
timestamps.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pcapsense.detector import load_detectors
from tests.conftest import ROOT, TSHARK

COMMITTED = ROOT / "sample_pcaps"
DETECTORS = set(load_detectors())  # the installed detectors: every one needs a positive sample
FIELDS = {
    "file",
    "format",
    "compressed",
    "link_types",
    "packets",
    "first_ts",
    "last_ts",
    "interfaces",
    "description",
    "expect_fire",
    "expect_silent",
}
TS = re.compile(r"^\d{10}\.\d{9}$")
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".gz")


def committed_manifest() -> list[dict]:
    return json.loads((COMMITTED / "manifest.json").read_text(encoding="utf-8"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ns(stamp: str) -> int:
    seconds, fraction = stamp.split(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0"))


def test_manifest_is_regenerated_identically(samples: Path) -> None:
    assert (samples / "manifest.json").read_bytes() == (COMMITTED / "manifest.json").read_bytes()


@pytest.mark.parametrize("name", [e["file"] for e in committed_manifest()])
def test_capture_is_regenerated_byte_for_byte(samples: Path, name: str) -> None:
    assert digest(samples / name) == digest(COMMITTED / name), (
        f"{name}: regenerate with python -m sample_pcaps.generate"
    )


def test_two_runs_are_identical(samples: Path, tmp_path: Path) -> None:
    """Independent of what is committed: a second run in a fresh process gives the same bytes."""
    subprocess.run(
        [sys.executable, "-m", "sample_pcaps.generate", "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    first = {p.name: digest(p) for p in samples.iterdir()}
    second = {p.name: digest(p) for p in tmp_path.iterdir()}
    assert first == second


def test_no_stale_or_missing_captures() -> None:
    on_disk = {p.name for p in COMMITTED.iterdir() if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES)}
    assert on_disk == {e["file"] for e in committed_manifest()}


def test_manifest_contract() -> None:
    entries = committed_manifest()
    assert [e["file"] for e in entries] == sorted(e["file"] for e in entries)
    for e in entries:
        name = e["file"]
        assert set(e) == FIELDS, name
        assert e["format"] in ("pcap", "pcapng"), name
        assert e["compressed"] == name.endswith(".gz"), name
        assert name.removesuffix(".gz").endswith("." + e["format"]), name
        assert e["packets"] > 0 and e["interfaces"] >= 1 and e["link_types"] == sorted(set(e["link_types"])), name
        assert TS.match(e["first_ts"]) and TS.match(e["last_ts"]), name
        assert ns(e["first_ts"]) <= ns(e["last_ts"]), name
        fire, silent = set(e["expect_fire"]), set(e["expect_silent"])
        assert fire | silent <= DETECTORS and not fire & silent, name
        assert (COMMITTED / name).stat().st_size <= 3_000_000, name
    fired = {d for e in entries for d in e["expect_fire"]}
    assert fired == DETECTORS, "every detector needs at least one positive sample"


def test_gzip_sample_is_the_healthy_capture() -> None:
    inflated = gzip.decompress((COMMITTED / "fmt_healthy.pcap.gz").read_bytes())
    assert inflated == (COMMITTED / "healthy.pcap").read_bytes()


@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("entry", committed_manifest(), ids=lambda e: e["file"])
def test_tshark_agrees_with_manifest(entry: dict) -> None:
    """Packet count and first/last timestamps as Wireshark reads them (custom blocks are records without an
    encapsulation there, and an SPB has no timestamp); timestamps never go backwards."""
    out = subprocess.run(
        [
            TSHARK,
            "-r",
            str(COMMITTED / entry["file"]),
            "-T",
            "fields",
            "-e",
            "frame.encap_type",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    packets = [stamp for encap, stamp in rows if encap]
    stamps = [ns(s) for s in packets if s]
    assert len(packets) == entry["packets"]
    assert stamps[0] == ns(entry["first_ts"]) and stamps[-1] == ns(entry["last_ts"])
    assert stamps == sorted(stamps)
