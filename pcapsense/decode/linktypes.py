"""Link-layer decoders, one per supported DLT, as a table. An unknown link type is counted, never guessed.

Each entry sets, for its rows, where the network header starts (`l3`), which network protocol it carries
(`net`, an ethertype) and the MAC addresses where the link layer has them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pcapsense.decode.gather import header

if TYPE_CHECKING:
    from pcapsense.decode.columns import _Decoder

VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MAX_VLAN_TAGS = 16
BSD_AF_INET = 2
BSD_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin

LINKTYPE_NAMES = {
    0: "BSD loopback (NULL)", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP", 108: "OpenBSD loopback",
    113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)",
}


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"unsupported link type {linktype}")


ETHERNET_HEADER = header(14, dst_hi=(0, ">u2"), dst_lo=(2, ">u4"), src_hi=(6, ">u2"), src_lo=(8, ">u4"),
                         etype=(12, ">u2"))


LINKTYPE_ETHERNET = 1


def mac(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """A 48-bit MAC address from its 16 high and 32 low bits, as an integer."""
    return (hi.astype(np.int64) << 32) | lo


def _ethernet(d: _Decoder, rows: np.ndarray) -> None:
    c, g = d.cols, d.g
    short = d.start[rows] + 14 > d.end[rows]
    d.mark(rows[short], "truncated-link-header")
    rows = rows[~short]
    p = d.start[rows]
    h = g.block(p, ETHERNET_HEADER)
    c["dst_mac"][rows] = mac(h["dst_hi"], h["dst_lo"])
    c["src_mac"][rows] = mac(h["src_hi"], h["src_lo"])
    etype = h["etype"].astype(np.int64)
    hlen = np.full(len(rows), 14)
    depth = np.zeros(len(rows), dtype=np.int64)
    for _ in range(MAX_VLAN_TAGS + 1):
        tagged = np.isin(etype, VLAN_TPIDS)
        if not tagged.any():
            break
        t = np.flatnonzero(tagged)
        etype[t] = g.be16(p[t] + hlen[t] + 2)
        hlen[t] += 4
        depth[t] += 1
    too_deep = np.isin(etype, VLAN_TPIDS)
    d.mark(rows[too_deep], "too-many-vlan-tags")
    cut = ~too_deep & (p + hlen > d.end[rows])
    d.mark(rows[cut], "truncated-link-header")
    ok = ~too_deep & ~cut
    rows = rows[ok]
    c["vlan_depth"][rows] = depth[ok]
    c["net"][rows] = etype[ok]
    c["l3"][rows] = p[ok] + hlen[ok]


SLL_BROADCAST = 1  # packet type "sent to us by somebody else, broadcast" (packet(7) PACKET_BROADCAST)
BROADCAST_MAC = 0xFFFFFFFFFFFF


def _cooked(header: int, proto_at: int, addr_at: int, ptype_at: int, ptype_size: int
            ) -> Callable[[_Decoder, np.ndarray], None]:
    """Linux cooked capture (SLL/SLL2): fixed header with the protocol type, the packet type and the sender's
    link address. The destination MAC is not recorded; a broadcast packet type stands in for it."""

    def decode(d: _Decoder, rows: np.ndarray) -> None:
        c, g = d.cols, d.g
        short = d.start[rows] + header > d.end[rows]
        d.mark(rows[short], "truncated-link-header")
        rows = rows[~short]
        p = d.start[rows]
        c["src_mac"][rows] = g.be48(p + addr_at)
        ptype = g.be16(p + ptype_at) if ptype_size == 2 else g.u8(p + ptype_at)
        c["dst_mac"][rows] = np.where(ptype == SLL_BROADCAST, BROADCAST_MAC, -1)
        c["net"][rows] = g.be16(p + proto_at)
        c["l3"][rows] = p + header

    return decode


def _raw(version_from_nibble: bool, ethertype: int = 0) -> Callable[[_Decoder, np.ndarray], None]:
    """Raw IP: no link header; the IP version comes from the first nibble or from the link type itself."""

    def decode(d: _Decoder, rows: np.ndarray) -> None:
        c, g = d.cols, d.g
        empty = d.start[rows] >= d.end[rows]
        d.mark(rows[empty], "truncated-ip-header")
        rows = rows[~empty]
        p = d.start[rows]
        if version_from_nibble:
            nibble = g.u8(p) >> 4
            c["net"][rows] = np.where(nibble == 6, 0x86DD, np.where(nibble == 4, 0x0800, 0))
        else:
            c["net"][rows] = ethertype
        c["l3"][rows] = p

    return decode


def _bsd_loopback(byte_order: str) -> Callable[[_Decoder, np.ndarray], None]:
    """DLT_NULL (host byte order of the capturing machine, so both orders are tried) and DLT_LOOP (network)."""

    def decode(d: _Decoder, rows: np.ndarray) -> None:
        c, g = d.cols, d.g
        short = d.start[rows] + 4 > d.end[rows]
        d.mark(rows[short], "truncated-link-header")
        rows = rows[~short]
        p = d.start[rows]
        family = g.be32(p)
        if byte_order == "host":
            family = np.where(family > 0xFFFF, g.le32(p), family)
        c["net"][rows] = np.where(family == BSD_AF_INET, 0x0800, np.where(np.isin(family, BSD_AF_INET6), 0x86DD, 0))
        c["l3"][rows] = p + 4

    return decode


LINK_LAYERS: dict[int, Callable[[_Decoder, np.ndarray], None]] = {
    0: _bsd_loopback("host"),
    LINKTYPE_ETHERNET: _ethernet,
    12: _raw(True),
    14: _raw(True),
    101: _raw(True),
    108: _bsd_loopback("network"),
    113: _cooked(16, 14, 6, 0, 2),
    228: _raw(False, 0x0800),
    229: _raw(False, 0x86DD),
    276: _cooked(20, 0, 12, 10, 1),
}
