"""Read-ahead in a forked child: the same results as in-process, on every sample capture, and clean failures.

Samples are small, so these tests fork from the first batch (FORK_AFTER_BYTES = 0) and read in 4 KiB chunks so
that every capture crosses many batches and all shared-memory slots get reused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pcapsense.readahead as readahead
from pcapsense.decode.columns import Packets
from pcapsense.engine import AnalysisOptions, analyze
from pcapsense.reader import open as reader_open
from pcapsense.reader.batch import RawBatch
from tests.conftest import ethernet_udp, pcap_header, pcap_record

pytestmark = pytest.mark.skipif(not readahead.can_fork(), reason="needs os.fork, two CPUs and a single thread")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_open, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", 0)


def _result(path: Path, read_ahead: bool) -> dict:
    result = analyze(str(path), AnalysisOptions(read_ahead=read_ahead))
    doc = result.to_dict()
    doc["stats"].pop("elapsed_s")
    doc["series"] = result.series
    return json.loads(json.dumps(doc, default=str))


def _forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pids the read-ahead forks (so a test can tell the child really ran)."""
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(readahead.os, "fork", fork)
    return pids


def test_every_sample_gives_the_same_result_in_a_forked_reader(samples: Path, small_chunks: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    captures = sorted(p for p in samples.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
    assert len(captures) >= 40
    pids = _forks(monkeypatch)
    for path in captures:
        forked_before = len(pids)
        assert _result(path, read_ahead=True) == _result(path, read_ahead=False), path.name
        assert len(pids) == forked_before + 1, f"{path.name}: no read-ahead child was forked"


def test_batches_too_large_for_a_slot_travel_pickled(samples: Path, small_chunks: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "SLOT_BYTES", 4096)
    path = samples / "syn_flood.pcap"
    assert _result(path, read_ahead=True) == _result(path, read_ahead=False)


def test_a_fault_found_by_the_child_marks_the_result_partial(tmp_path: Path, small_chunks: None) -> None:
    records = b"".join(pcap_record(ethernet_udp(src=i % 200 + 1), ts=1_700_000_000 + i) for i in range(400))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap_header() + records[:-10])
    forked, inline = _result(cut, read_ahead=True), _result(cut, read_ahead=False)
    assert forked == inline
    assert forked["capture"]["partial"] is True
    assert forked["capture"]["packets"] == 399
    assert forked["capture"]["fault"]["record"] == 400


def test_a_crash_in_the_child_reaches_the_caller(samples: Path, small_chunks: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_decode = readahead.decode_batch

    def failing_decode(*args: object):
        calls["n"] += 1
        if calls["n"] > 3:  # the child's copy of the counter passes 3 after the fork
            raise ValueError("decoder bug")
        return real_decode(*args)

    monkeypatch.setattr(readahead, "decode_batch", failing_decode)
    with pytest.raises(ValueError, match="decoder bug"):
        analyze(str(samples / "healthy.pcap"), AnalysisOptions(read_ahead=True))


def test_a_killed_child_is_a_clear_error(samples: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_decode = readahead.decode_batch

    def dying_decode(*args: object):
        calls["n"] += 1
        if calls["n"] > 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_decode(*args)

    monkeypatch.setattr(readahead, "decode_batch", dying_decode)
    with pytest.raises(readahead.ReaderProcessError, match="signal 9"):
        analyze(str(samples / "healthy.pcap"), AnalysisOptions(read_ahead=True))


def test_no_fork_below_the_threshold_or_when_disabled(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _forks(monkeypatch)
    analyze(str(samples / "healthy.pcap"))  # far below FORK_AFTER_BYTES
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", 0)
    analyze(str(samples / "healthy.pcap"), AnalysisOptions(read_ahead=False))
    assert pids == []


def _decoded_facts(doc: dict) -> dict:
    """What decoding and flow tracking decide: independent of where batch boundaries fall. (Evidence samples and
    report series may pick different representatives of equal candidates when batches are cut elsewhere.)"""
    return {"capture": doc["capture"], "stats": doc["stats"], "ladder": doc["ladder"],
            "findings": [(f["detector"], f["severity"], f["title"]) for f in doc["findings"]]}


def test_batches_split_to_a_row_bound_give_the_same_result(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [samples / name for name in ("syn_flood.pcap", "dns_failure.pcap", "fmt_pcapng_two_if.pcapng",
                                         "slowloris.pcap", "arp_storm.pcap")]
    whole = [_decoded_facts(_result(p, read_ahead=False)) for p in paths]
    sizes: list[int] = []
    real_decode = readahead.decode_batch

    def recording_decode(batch: RawBatch, linktypes: np.ndarray, space: object = None) -> Packets:
        sizes.append(len(batch))
        return real_decode(batch, linktypes, space)

    monkeypatch.setattr(readahead, "decode_batch", recording_decode)
    monkeypatch.setattr(readahead, "MAX_BATCH_ROWS", 7)
    assert [_decoded_facts(_result(p, read_ahead=False)) for p in paths] == whole
    assert max(sizes) == 7 and len(sizes) > 50


# -- an early start: the read-ahead child forked before the engine is loaded ---------------------------------


def test_start_forks_at_once_for_a_large_file_and_the_engine_takes_it_over(
        samples: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _forks(monkeypatch)
    path = samples / "syn_flood.pcap"
    early = readahead.start(str(path))
    assert early is not None and len(pids) == 1  # forked before anyone asked for a batch
    try:
        result = analyze(str(path), AnalysisOptions(), early=early)
    finally:
        early.close()
    doc = result.to_dict()
    doc["stats"].pop("elapsed_s")
    doc["series"] = result.series
    assert json.loads(json.dumps(doc, default=str)) == _result(path, read_ahead=False)
    assert len(pids) == 1


def test_start_declines_what_it_cannot_read_ahead_at_once(samples: Path, small_chunks: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_capture = tmp_path / "notes.txt"
    not_a_capture.write_text("hello\n" * 100)
    for path in ("-", str(samples / "fmt_healthy.pcap.gz"), str(not_a_capture), str(tmp_path / "missing.pcap")):
        assert readahead.start(path) is None, path
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", (samples / "healthy.pcap").stat().st_size + 1)
    assert readahead.start(str(samples / "healthy.pcap")) is None  # smaller than the threshold
    monkeypatch.setattr(readahead, "FORK_AFTER_BYTES", 0)
    monkeypatch.setattr(readahead, "can_fork", lambda: False)
    assert readahead.start(str(samples / "healthy.pcap")) is None


def test_closing_an_unused_start_reaps_its_child(samples: Path, small_chunks: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _forks(monkeypatch)
    early = readahead.start(str(samples / "syn_flood.pcap"))
    assert early is not None
    early.close()
    early.close()  # twice is harmless
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)


def test_analyze_forks_its_reader_before_loading_pandas(tmp_path: Path) -> None:
    """`pcapsense analyze` on a capture file of at least FORK_AFTER_BYTES starts the read-ahead child before it
    imports pandas and the detectors, so the child reads and decodes while they load."""
    big = tmp_path / "big.pcap"
    frame = ethernet_udp(bytes(60_000))
    records = (readahead.FORK_AFTER_BYTES // len(frame)) + 10
    big.write_bytes(pcap_header() + b"".join(pcap_record(frame, ts=1_700_000_000 + i) for i in range(records)))
    code = """
import json, os, sys
parent, seen, fork = os.getpid(), [], os.fork
def recording_fork():
    seen.append("pandas" in sys.modules)
    return fork()
os.fork = recording_fork
from pcapsense import cli
sys.argv = ["pcapsense", "analyze", sys.argv[1], "-q", "--no-report", "--format", "json"]
try:
    cli.main()
finally:
    if os.getpid() == parent:
        print(json.dumps(seen), file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [False]
    assert json.loads(proc.stdout)["capture"]["packets"] == records


def test_the_command_line_loads_without_pandas() -> None:
    """What readahead.start needs before it forks must not pull in pandas (it would load before the fork)."""
    code = "import sys; import pcapsense.cli; print('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() \
        == "False"
