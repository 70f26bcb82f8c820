"""The flow table's memory bounds, apart from the table so that the command line can show their defaults without
loading pandas (which `pcapsense analyze` loads only once the read-ahead child is decoding)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlowLimits:
    """Memory bounds of the flow table. Times are in capture (packet) time, not wall-clock time."""

    max_flows: int = 150_000  # ~0.7 KiB of state each (~105 MB): keeps a 1M-handshake flood under 512 MB
    half_open_timeout_s: float = 64.0  # Linux drops SYN_RECV after tcp_synack_retries=5 (~63 s)
    established_timeout_s: float = 600.0  # Suricata flow-timeouts.tcp.established
    closed_timeout_s: float = 60.0  # Linux TCP_TIMEWAIT_LEN: closed tuples stay to reveal reuse inside TIME_WAIT
    udp_timeout_s: float = 60.0  # Zeek udp_inactivity_timeout
    other_timeout_s: float = 60.0  # Zeek icmp/unknown_ip_inactivity_timeout
    ooo_window_ms: float = 3.0  # Wireshark's default out-of-order RTT threshold
    mirror_window_us: float = 2000.0  # an identical packet again within this is a mirrored duplicate
