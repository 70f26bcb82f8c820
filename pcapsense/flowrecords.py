"""Closed, expired or evicted flows become flow records: one pandas row per connection.

The record is what detectors reason about for handshakes, closes and reuse: a Zeek-style history string and
connection state, per-direction counters, the frames that matter as evidence and why the record was emitted.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import numpy as np
import pandas as pd

from pcapsense.grouped import NEG

# Zeek history letters, in bit order; upper case = originator, lower case = responder.
HISTORY_LETTERS = "SHADFRTGWC"
LETTER_BIT = {letter: i for i, letter in enumerate(HISTORY_LETTERS)}
END_REASONS = ("end-of-capture", "idle-timeout", "evicted-flow-cap", "superseded-by-reuse")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6"}


@lru_cache(maxsize=1 << 12)  # the busy addresses; a flood's random sources must not fill it (~300 B an entry)
def address_text(hi: int, lo: int) -> str:
    """Render a 128-bit address; IPv4 lives in it as ::ffff:a.b.c.d and is shown as a.b.c.d (formatted directly:
    a third of what ipaddress takes, for the many addresses a flood or the end of a capture brings at once)."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return f"{lo >> 24 & 255}.{lo >> 16 & 255}.{lo >> 8 & 255}.{lo & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))


@lru_cache(maxsize=1 << 12)
def mac_text(mac: int) -> str:
    return "" if mac < 0 else ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -1, -8))


@lru_cache(maxsize=1 << 12)  # few distinct histories: most records repeat one
def conn_state(history: str, proto: int) -> str:
    """Zeek's conn_state from the history string (base/protocols/conn/main.zeek definitions)."""
    if proto != 6:
        return "SF" if ("D" in history and "d" in history) else ("S0" if "d" not in history else "OTH")
    orig_syn, resp_synack = "S" in history, "h" in history
    orig_fin, resp_fin = "F" in history, "f" in history
    orig_rst, resp_rst = "R" in history, "r" in history
    if not orig_syn:
        if resp_synack and resp_rst:
            return "RSTRH"
        if resp_synack and resp_fin:
            return "SHR"
        return "OTH"
    if not resp_synack:
        if resp_rst:
            return "REJ"
        if orig_rst:
            return "RSTOS0"
        if orig_fin:
            return "SH"
        return "S0"
    if orig_rst:
        return "RSTO"
    if resp_rst:
        return "RSTR"
    if orig_fin and resp_fin:
        return "SF"
    if orig_fin:
        return "S2"
    if resp_fin:
        return "S3"
    return "S1"


@lru_cache(maxsize=1 << 12)
def handshake(history: str) -> str:
    """complete / half-open (SYN + SYN-ACK, no completing ACK) / syn-only / none (midstream).

    Data from the responder after its SYN-ACK also proves completion: it left SYN_RECV, so the completing ACK
    reached it even if the capture missed it."""
    if "S" not in history:
        return "none"
    if "h" not in history:
        return "syn-only"
    return "complete" if ("A" in history or "D" in history or "d" in history) else "half-open"


def _known(values: np.ndarray) -> np.ndarray:
    """Sequence positions as floats (exact below 2**53), NaN where nothing was seen."""
    return np.where(values > NEG, values, np.nan)


def _seconds(ns: np.ndarray) -> np.ndarray:
    return np.where(ns >= 0, ns / 1e9, np.nan)


def _wide(values: np.ndarray) -> np.ndarray:
    """Integer state is stored as narrow as it can be; records carry it as int64, as detectors have always seen it
    (and so that arithmetic on a record column never wraps)."""
    return values if values.dtype == bool else values.astype(np.int64)


# history code (letter bit * 2 + direction) -> its character; index 0 of the padding row is NUL
_CODE_CHARS = np.frombuffer("".join(f"{c}{c.lower()}" for c in HISTORY_LETTERS).encode(), dtype=np.uint8)
HISTORY_CODES = len(_CODE_CHARS)
CODE_BITS = 5  # bits per code in hist_lo / hist_hi
LO_CODES = 12  # codes packed into hist_lo (60 bits); the remaining HISTORY_CODES - LO_CODES go to hist_hi


def history_text(lo: np.ndarray, hi: np.ndarray, length: np.ndarray) -> list[str]:
    """Unpack the packed history codes of each flow into its Zeek history string, all flows at once."""
    shifts = CODE_BITS * np.arange(HISTORY_CODES) % (CODE_BITS * LO_CODES)
    packed = np.where(np.arange(HISTORY_CODES) < LO_CODES, lo[:, None], hi[:, None])
    codes = (packed >> shifts) & ((1 << CODE_BITS) - 1)
    chars = np.where(np.arange(HISTORY_CODES) < length[:, None], _CODE_CHARS[codes], 0).astype(np.uint8)
    return np.ascontiguousarray(chars).view(f"S{HISTORY_CODES}").ravel().astype(str).tolist()


def build_records(s: dict[str, np.ndarray], reasons: np.ndarray) -> pd.DataFrame:
    """One row per flow of `s`, the state of departing flows (SlotStore.take); `reasons` are end-reason codes."""
    proto = _wide(s["proto"])
    histories = history_text(s["hist_lo"], s["hist_hi"], s["hist_len"])
    o_hi, o_lo = s["orig_hi"].tolist(), s["orig_lo"].tolist()
    r_hi, r_lo = s["resp_hi"].tolist(), s["resp_lo"].tolist()
    cols: dict[str, object] = {
        "conn_id": s["conn_id"],
        "proto": proto,
        "orig": [address_text(h, lo) for h, lo in zip(o_hi, o_lo, strict=True)],
        "orig_port": _wide(s["orig_port"]),
        "resp": [address_text(h, lo) for h, lo in zip(r_hi, r_lo, strict=True)],
        "resp_port": _wide(s["resp_port"]),
        "first_ts": s["first_ns"] / 1e9,
        "last_ts": s["last_ns"] / 1e9,
        "history": histories,
        "state": [conn_state(h, int(p)) for h, p in zip(histories, proto.tolist(), strict=True)],
        "handshake": [handshake(h) if p == 6 else "none" for h, p in zip(histories, proto.tolist(), strict=True)],
        "end_reason": [END_REASONS[r] for r in reasons.tolist()],
    }
    for name in ("first_frame", "last_frame", "syn_frame", "synack_frame", "ack3_frame", "rst_frame", "rst_dir",
                 "rst_ttl", "fin_first_dir", "fin_frame", "prev_closed", "syn_count", "synack_count", "syn_retrans",
                 "synack_retrans"):
        cols[name] = _wide(s[name])
    for name in ("syn_ns", "synack_ns", "ack3_ns", "fin_ns", "rst_ns", "closed_ns"):
        cols[name.replace("_ns", "_ts")] = _seconds(s[name])
    cols["reuse_gap_s"] = _seconds(s["reuse_gap_ns"])
    for name in ("pkts", "bytes", "payload", "retrans", "fast_retrans", "ooo", "lost", "ack_unseen",
                 "ack_no_peer", "dupes", "dupacks", "zero_win", "max_seg", "max_acked_seg", "max_ip_len", "mss",
                 "wscale", "ttl_first", "ttl_min", "ttl_max", "iface_first", "iface_mask", "mac_varies",
                 "flags_or"):
        both = _wide(s[name])
        cols[f"{name}_o"], cols[f"{name}_r"] = both[:, 0], both[:, 1]
    # sequence progress in relative sequence space (first seen sequence of the direction = 0): how far each
    # side's data was sent, and how far the peer acknowledged it, as seen by the capture
    cols["next_seq_o"], cols["next_seq_r"] = _known(s["nextseq"][:, 0]), _known(s["nextseq"][:, 1])
    cols["acked_to_o"], cols["acked_to_r"] = _known(s["max_uack"][:, 1]), _known(s["max_uack"][:, 0])
    cols["mac_o"] = [mac_text(m) for m in s["mac_first"][:, 0].tolist()]
    cols["mac_r"] = [mac_text(m) for m in s["mac_first"][:, 1].tolist()]
    return pd.DataFrame(cols)
