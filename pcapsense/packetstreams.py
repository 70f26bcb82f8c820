"""Event streams that depend on the packets alone: selected with masks, returned as columns (name -> values).

ARP, broadcasts, NDP and ICMP errors need nothing but the batch; DNS needs the batch plus which rows the flow
table tracks, which is itself a property of the packets (flowkeys.tracked_rows). None of this reads flow state
(see prepare.py); the engine turns the columns into frames and adds connections. Deep payload decoding (DNS)
goes through the hardened decoder; failures are counted per kind. A selection tests its rarest condition over
the whole batch and the others only on the rows that passed it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from pcapsense.decode.columns import ETH_ARP, ETH_IPV4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packets
from pcapsense.decode.dns import RCODE_NAMES, DnsMessage, parse_dns
from pcapsense.decode.gather import Gather
from pcapsense.decode.linktypes import BROADCAST_MAC
from pcapsense.errors import MalformedPacket
from pcapsense.flowrecords import address_text

Columns = dict[str, Any]  # column name -> numpy array or list, one value per selected packet (or message)

DNS_PORTS = (53, 5353, 5355)
ARP_IPV4_BYTES = 28  # an ARP packet for IPv4 over Ethernet
ARP_ETHER_IPV4 = 1 << 32 | ETH_IPV4 << 16 | 6 << 8 | 4  # hardware type 1 (Ethernet), IPv4, address lengths 6, 4
FRAME_HASH_BYTES = 64
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3  # 64-bit FNV-1a


def any_of(values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    """`np.isin` for a handful of constants: a few comparisons cost less than its sort or lookup table."""
    mask = values == choices[0]
    for choice in choices[1:]:
        mask |= values == choice
    return mask


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


def dns(pk: Packets, tracked: np.ndarray, malformed: Counter[str]) -> tuple[np.ndarray, Columns] | None:
    """DNS messages of the tracked rows (`tracked`: the flow table's rows of this batch): (their rows, their
    columns). The flow columns (connection) are the engine's to add; one row per decoded message."""
    rows = np.flatnonzero(any_of(pk.sport, DNS_PORTS) | any_of(pk.dport, DNS_PORTS))
    l4 = any_of(pk.proto[rows], (PROTO_UDP, PROTO_TCP))
    rows = rows[l4 & (pk.payload_len[rows] > 0) & (pk.malformed[rows] == 0)]
    rows = rows[np.isin(rows, tracked, assume_unique=True)]
    kept, messages = _parse_dns(pk, rows, malformed)
    if not messages:
        return None
    rows = rows[kept]
    return rows, {
        "frame": pk.frame[rows], "ts": pk.ts_ns[rows] / 1e9,
        "src": addresses(pk.src_hi[rows], pk.src_lo[rows]), "sport": pk.sport[rows],
        "dst": addresses(pk.dst_hi[rows], pk.dst_lo[rows]), "dport": pk.dport[rows],
        "transport": ["tcp" if tcp else "udp" for tcp in (pk.proto[rows] == PROTO_TCP).tolist()],
        **_message_columns(messages),
    }


def _parse_dns(pk: Packets, rows: np.ndarray, malformed: Counter[str]) -> tuple[list[int], list[DnsMessage]]:
    """Decode the selected payloads; return the positions in `rows` that decoded and their messages."""
    kept: list[int] = []
    messages: list[DnsMessage] = []
    flags = zip(rows.tolist(), pk.fragment[rows].tolist(), (pk.proto[rows] == PROTO_TCP).tolist(), strict=True)
    for pos, (row, fragment, over_tcp) in enumerate(flags):
        if fragment:
            malformed["dns-fragmented-not-reassembled"] += 1
            continue
        try:
            messages.append(parse_dns(pk.payload(row), over_tcp=over_tcp))
        except MalformedPacket as exc:
            malformed[exc.kind] += 1
            continue
        kept.append(pos)
    return kept, messages


def _message_columns(messages: list[DnsMessage]) -> Columns:
    """The DNS stream's columns taken from the decoded messages.

    Integer and boolean columns are built as typed arrays because pandas infers the type of a list element by
    element; qtype stays a list so that a None (no question) still turns it into floats with NaN.
    """
    field = dict(zip(DnsMessage._fields, zip(*messages, strict=True), strict=True))
    return {
        "id": np.array(field["id"], dtype=np.int64),
        "is_response": np.array(field["is_response"], dtype=bool),
        "opcode": np.array(field["opcode"], dtype=np.int64),
        "rcode": np.array(field["rcode"], dtype=np.int64),
        "rcode_name": [RCODE_NAMES.get(rcode, str(rcode)) for rcode in field["rcode"]],
        "truncated": np.array(field["truncated"], dtype=bool),
        "qname": list(field["qname"]),
        "qtype": list(field["qtype"]),
        "ancount": np.array(field["ancount"], dtype=np.int64),
        "answers": [",".join(answers) for answers in field["answers"]],
    }
