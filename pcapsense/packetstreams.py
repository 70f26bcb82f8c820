"""Event streams that depend on the packets alone: selected with masks, returned as columns (name -> values).

ARP, broadcasts, NDP and ICMP errors need nothing but the batch; DNS needs the batch's messages, decoded with
the batch (decode/dnsbatch.py). None of this reads flow state (see prepare.py); the engine turns the columns
into frames and adds connections. A selection tests its rarest condition over the whole batch and the others
only on the rows that passed it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from pcapsense.decode.columns import ETH_ARP, ETH_IPV4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packets, any_of
from pcapsense.decode.dnsbatch import DnsMessages
from pcapsense.decode.gather import Gather
from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.flowrecords import address_text

Columns = dict[str, Any]  # column name -> numpy array or list, one value per selected packet (or message)

ARP_IPV4_BYTES = 28  # an ARP packet for IPv4 over Ethernet
ARP_ETHER_IPV4 = 1 << 32 | ETH_IPV4 << 16 | 6 << 8 | 4  # hardware type 1 (Ethernet), IPv4, address lengths 6, 4
FRAME_HASH_BYTES = 64
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3  # 64-bit FNV-1a


def addresses(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    return [address_text(h, low) for h, low in zip(hi.tolist(), lo.tolist(), strict=True)]


def _be_field(block: np.ndarray, start: int, width: int) -> np.ndarray:
    """Big-endian integer in bytes `start`..`start + width` of each row of a gathered (row, byte) block.

    Gathering a whole header once and slicing fields from it takes a few numpy calls instead of a gather
    per byte of every field.
    """
    return block[:, start : start + width] @ (256 ** np.arange(width - 1, -1, -1))


def frame_hashes(pk: Packets, rows: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a over the first bytes of each frame: identical frames (a loop) hash alike.

    The bytes are gathered in one (byte index, row) matrix, zero past each frame's end, so each sequential
    FNV step is two in-place operations over all rows. A step over a zero byte only multiplies by the prime,
    so the steps past the longest frame (ARP frames are 42 bytes) collapse into one multiplication.
    """
    start, length = pk.start[rows], pk.caplen[rows]
    hashed = min(FRAME_HASH_BYTES, int(length.max(initial=0)))
    offsets = np.arange(hashed)[:, None]
    frame_bytes = np.where(offsets < length, Gather(pk.data).u8(start + offsets), 0).astype(np.uint64)
    h = np.full(len(rows), FNV_OFFSET, dtype=np.uint64)
    prime = np.full(len(rows), FNV_PRIME, dtype=np.uint64)  # an array operand: a numpy scalar costs more per step
    with np.errstate(over="ignore"):
        for byte in frame_bytes:
            h ^= byte
            h *= prime
        h *= np.uint64(pow(FNV_PRIME, FRAME_HASH_BYTES - hashed, 1 << 64))
        h ^= length.astype(np.uint64)
    return h.view(np.int64)


# -- L2 -------------------------------------------------------------------------------------------------------


def arp(pk: Packets, malformed: Counter[str]) -> Columns | None:
    """Ethernet/IPv4 ARP only (hardware type 1, protocol 0x0800, address lengths 6 and 4)."""
    rows = np.flatnonzero(pk.net == ETH_ARP)
    rows = rows[(pk.malformed[rows] == 0) & (pk.l3[rows] >= 0)]
    header = Gather(pk.data).u8(pk.l3[rows][:, None] + np.arange(ARP_IPV4_BYTES))
    ether_ipv4 = _be_field(header, 0, 6) == ARP_ETHER_IPV4
    malformed["arp-not-ethernet-ipv4"] += int(np.count_nonzero(~ether_ipv4))
    rows, header = rows[ether_ipv4], header[ether_ipv4]
    if not len(rows):
        return None
    return {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "iface": pk.iface[rows],
        "op": _be_field(header, 6, 2), "sha": _be_field(header, 8, 6), "spa": _be_field(header, 14, 4),
        "tha": _be_field(header, 18, 6), "tpa": _be_field(header, 24, 4), "src_mac": pk.src_mac[rows],
        "dst_mac": pk.dst_mac[rows], "frame_hash": frame_hashes(pk, rows),
    }


def broadcast(pk: Packets, malformed: Counter[str]) -> Columns | None:
    rows = np.flatnonzero(pk.dst_mac == BROADCAST_MAC)
    if not len(rows):
        return None
    return {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "src_mac": pk.src_mac[rows],
        "net": pk.net[rows], "frame_hash": frame_hashes(pk, rows),
    }


def ndp(pk: Packets, malformed: Counter[str]) -> Columns | None:
    rows = np.flatnonzero(pk.proto == PROTO_ICMPV6)
    rows = rows[any_of(pk.icmp_type[rows], (135, 136)) & (pk.payload_cap[rows] >= 16)]
    if not len(rows):
        return None
    g, p = Gather(pk.data), pk.payload_off[rows]
    return {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "type": pk.icmp_type[rows],
        "src": addresses(pk.src_hi[rows], pk.src_lo[rows]),
        "target": addresses(g.be64(p), g.be64(p + 8)), "src_mac": pk.src_mac[rows],
    }


# -- L3 -------------------------------------------------------------------------------------------------------


def icmp_errors(pk: Packets, malformed: Counter[str]) -> Columns | None:
    """ICMP/ICMPv6 errors with the 5-tuple of the packet they quote (which flow the router is talking about)."""
    icmp = np.flatnonzero(((pk.proto == PROTO_ICMP) | (pk.proto == PROTO_ICMPV6)) & (pk.malformed == 0))
    kind, v6 = pk.icmp_type[icmp], pk.proto[icmp] == PROTO_ICMPV6
    rows = icmp[np.where(v6, any_of(kind, (1, 2, 3, 4)), any_of(kind, (3, 4, 5, 11, 12)))]
    if not len(rows):
        return None
    g = Gather(pk.data)
    inner = pk.payload_off[rows]  # the quoted packet starts right after the 8-byte ICMP header
    room = pk.payload_cap[rows]
    ver = g.u8(inner) >> 4
    ihl = np.where(ver == 4, (g.u8(inner) & 0xF) * 4, 40)
    proto = np.where(ver == 4, g.u8(inner + 9), g.u8(inner + 6))
    src_hi = np.where(ver == 4, 0, g.be64(inner + 8).astype(np.int64)).astype(np.uint64)
    v4_src = (np.uint64(0xFFFF << 32) | g.be32(inner + 12).astype(np.uint64))
    v4_dst = (np.uint64(0xFFFF << 32) | g.be32(inner + 16).astype(np.uint64))
    src_lo = np.where(ver == 4, v4_src, g.be64(inner + 16))
    dst_hi = np.where(ver == 4, 0, g.be64(inner + 24).astype(np.int64)).astype(np.uint64)
    dst_lo = np.where(ver == 4, v4_dst, g.be64(inner + 32))
    has_ports = (room >= ihl + 4) & np.isin(proto, (PROTO_TCP, PROTO_UDP))
    quoted_ok = ((ver == 4) & (room >= 20)) | ((ver == 6) & (room >= 40))
    return {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9, "v6": pk.proto[rows] == PROTO_ICMPV6,
        "type": pk.icmp_type[rows], "code": pk.icmp_code[rows], "mtu": pk.icmp_mtu[rows],
        "reporter": addresses(pk.src_hi[rows], pk.src_lo[rows]),
        "quoted": quoted_ok, "inner_proto": np.where(quoted_ok, proto, -1),
        "inner_src": addresses(src_hi, src_lo), "inner_dst": addresses(dst_hi, dst_lo),
        "inner_sport": np.where(has_ports, g.be16(inner + ihl), -1),
        "inner_dport": np.where(has_ports, g.be16(inner + ihl + 2), -1),
        "inner_len": np.where(ver == 4, g.be16(inner + 2), g.be16(inner + 4) + 40),
    }


PACKET_STREAMS = {"arp": arp, "broadcast": broadcast, "ndp": ndp, "icmp_errors": icmp_errors}


# -- DNS ------------------------------------------------------------------------------------------------------


def dns(pk: Packets, messages: DnsMessages) -> tuple[np.ndarray, Columns] | None:
    """The DNS stream of a batch from its decoded messages (decode/dnsbatch.py): (their rows, their columns),
    one row per message. The flow columns (connection) are the engine's to add."""
    if not len(messages):
        return None
    rows = messages.rows
    return rows, {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9,
        "src": addresses(pk.src_hi[rows], pk.src_lo[rows]), "sport": pk.sport[rows],
        "dst": addresses(pk.dst_hi[rows], pk.dst_lo[rows]), "dport": pk.dport[rows],
        "transport": ["tcp" if tcp else "udp" for tcp in (pk.proto[rows] == PROTO_TCP).tolist()],
        **messages.columns,
    }
