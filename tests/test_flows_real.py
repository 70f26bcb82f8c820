"""Flow rebuild on public real-world captures, compared with tshark's counts.

Definitions: our "retransmissions" = Wireshark's tcp.analysis.retransmission + fast_retransmission, with mirrored
duplicates (same packet, same IP ID, again within 2 ms) split out — Wireshark counts those as retransmissions;
the captures below have none, so the numbers must agree exactly or within one.
"""

from __future__ import annotations

import subprocess

import pytest

from pcapsense.engine import AnalysisOptions, analyze
from tests.conftest import REAL_PCAPS, TSHARK

CASES = ["chrissanders__http_espn_fail.pcapng", "chrissanders__synscan.pcapng", "zeek__ftp__bruteforce.pcap",
         "zeek__ssh.server-side-half-duplex.pcap", "chrissanders__tcp_retransmissions.pcapng",
         "stopddos__amp.dns.RRSIG.fragmented.pcap", "suricata__bug-3616-smtp__input.pcap"]

pytestmark = [pytest.mark.skipif(TSHARK is None, reason="tshark not installed"),
              pytest.mark.skipif(not REAL_PCAPS.is_dir(), reason="../shared/pcaps/real not present")]


def tshark_count(path: str, display_filter: str) -> int:
    out = subprocess.run([TSHARK, "-r", path, "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.split())


def tshark_streams(path: str) -> int:
    out = subprocess.run([TSHARK, "-r", path, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream"],
                         capture_output=True, text=True, check=True).stdout
    return len(set(out.split()))


@pytest.mark.parametrize("name", CASES)
def test_counts_agree_with_tshark(name: str) -> None:
    path = str(REAL_PCAPS / name)
    result = analyze(path, AnalysisOptions(registry={}))
    tcp = result.stats["tcp"]
    ours = tcp.get("retransmissions", 0) + tcp.get("fast_retransmissions", 0) + tcp.get("out_of_order", 0)
    theirs = tshark_count(path, "tcp.analysis.retransmission || tcp.analysis.fast_retransmission "
                                "|| tcp.analysis.out_of_order")
    assert abs(ours - theirs) <= 1, (ours, theirs)
    assert tcp["connections"] == tshark_streams(path)
    assert tcp.get("syn", 0) == tshark_count(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0")
    assert result.capture["packets"] == tshark_count(path, "frame")
