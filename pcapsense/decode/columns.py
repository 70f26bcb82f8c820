"""Columnar L2-L4 decoding of a whole batch at once.

Common headers (link layers, VLAN tags, IPv4/IPv6 with extension headers, IP-in-IP and GRE tunnels, TCP with
options, UDP, ICMP, ARP) are decoded for every packet of a batch with numpy, one array per field. Frames of the
layout nearly every packet of a TCP capture has (untagged Ethernet, IPv4 without options, TCP) are first read as
one record each (_Decoder._common_frames); the general steps, layer by layer, decode the others. Nesting is
bounded by MAX_LAYERS: a frame of 300 nested IP headers or 10,000 VLAN tags is one counted malformed packet.
Malformed packets are labelled by kind and counted, never fatal. Payloads above L4 (DNS, TLS, HTTP) are left
to the deep decoders, which only see the few packets the core selects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from pcapsense.decode.gather import Gather, header
from pcapsense.decode.linktypes import ETHERNET_HEADER, LINK_LAYERS, LINKTYPE_ETHERNET, mac
from pcapsense.reader.batch import RawBatch

MAX_LAYERS = 16  # Suricata's decoder.max-layers: deeper nesting is an attack or a broken frame
IPV4_MAPPED = np.uint64(0xFFFF << 32)  # IPv4 addresses live in the IPv6 space as ::ffff:a.b.c.d

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP, PROTO_IPV6, PROTO_GRE, PROTO_ICMPV6 = 1, 4, 6, 17, 41, 47, 58
IPV6_EXTENSIONS = {0: "hop-by-hop", 43: "routing", 44: "fragment", 60: "destination", 51: "auth"}

# Malformed kinds, by code. Code 0 is a well-formed packet.
MALFORMED_KINDS = (
    "ok",
    "truncated-link-header",
    "too-many-vlan-tags",
    "truncated-ip-header",
    "bad-ip-version",
    "bad-ip-header-length",
    "ip-length-exceeds-frame",
    "too-many-layers",
    "truncated-l4-header",
    "bad-tcp-header-length",
    "l4-length-negative",
    "truncated-arp",
)
MALFORMED = {name: code for code, name in enumerate(MALFORMED_KINDS)}
# the fixed headers read as one record per packet (IPv4 and TCP without their options)
IPV4_HEADER = header(20, ver_ihl=(0, "u1"), total=(2, ">u2"), ip_id=(4, ">u2"), flags=(6, ">u2"), ttl=(8, "u1"),
                     proto=(9, "u1"), src=(12, ">u4"), dst=(16, ">u4"))
IPV6_HEADER = header(40, ver=(0, "u1"), plen=(4, ">u2"), next=(6, "u1"), hop_limit=(7, "u1"), src_hi=(8, ">u8"),
                     src_lo=(16, ">u8"), dst_hi=(24, ">u8"), dst_lo=(32, ">u8"))
TCP_HEADER = header(20, sport=(0, ">u2"), dport=(2, ">u2"), seq=(4, ">u4"), ack=(8, ">u4"), off=(12, "u1"),
                    flags=(13, "u1"), win=(14, ">u2"))
TCP_TIMESTAMPS_ONLY = 0x0101080A  # options NOP, NOP, timestamps (kind 8, length 10): nothing else to read
# The frame layout nearly every packet of a TCP capture has: untagged Ethernet, IPv4 without options, TCP; then
# the word after a 20-byte TCP header (options, or the payload's first bytes) and after a 32-byte one (the
# payload after NOP NOP timestamps). See _Decoder._common_frames.
COMMON_FRAME = header(70, eth=(0, ETHERNET_HEADER), ip=(14, IPV4_HEADER), tcp=(34, TCP_HEADER), at54=(54, ">u4"),
                      at66=(66, ">u4"))
POSITION_COLUMNS = frozenset({"start", "end", "l3", "l4", "payload_off"})  # index `data`; l3, l4 are -1 if absent


@dataclass(slots=True)
class Packets:
    """One batch of packets as parallel columns. Positions (POSITION_COLUMNS) index `data`."""

    data: np.ndarray
    frame: np.ndarray
    ts_ns: np.ndarray
    iface: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    start: np.ndarray
    end: np.ndarray
    linktype: np.ndarray
    net: np.ndarray  # ethertype of the network layer (0 when there is none or the link type is unknown)
    src_mac: np.ndarray  # 48-bit MAC as an integer, -1 when the link layer has none
    dst_mac: np.ndarray
    vlan_depth: np.ndarray
    ipver: np.ndarray
    l3: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    ttl: np.ndarray
    ip_id: np.ndarray
    df: np.ndarray
    fragment: np.ndarray  # any IP fragment
    later_fragment: np.ndarray  # a fragment with offset > 0: no L4 header inside
    ip_len: np.ndarray  # IP packet length on the wire
    tunnel_depth: np.ndarray
    proto: np.ndarray
    l4: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    win: np.ndarray
    tcp_hlen: np.ndarray
    mss: np.ndarray
    wscale: np.ndarray
    sack_ok: np.ndarray
    sack_blocks: np.ndarray
    payload_len: np.ndarray  # L4 payload bytes on the wire
    payload_off: np.ndarray
    payload_cap: np.ndarray  # L4 payload bytes actually captured
    payload_head: np.ndarray  # first 4 payload bytes, big-endian (-1 when fewer are captured): protocol sniffing
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    icmp_mtu: np.ndarray
    malformed: np.ndarray
    unknown_link: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def payload(self, row: int, limit: int | None = None) -> bytes:
        """Captured L4 payload of one packet (for the deep decoders)."""
        start = int(self.payload_off[row])
        size = int(self.payload_cap[row]) if limit is None else min(int(self.payload_cap[row]), limit)
        return self.data[start : start + size].tobytes()

    def frame_bytes(self, row: int) -> bytes:
        return self.data[int(self.start[row]) : int(self.end[row])].tobytes()

    def take(self, rows: np.ndarray) -> Packets:
        """A sub-batch of the given rows (the byte buffer is shared)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Packets(**{k: (v if k == "data" else v[rows]) for k, v in values.items()})


def any_of(values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    """`np.isin` for a handful of constants: a few comparisons cost less than its sort or lookup table."""
    mask = values == choices[0]
    for choice in choices[1:]:
        mask |= values == choice
    return mask


def tracked(pk: Packets, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Whether the flow table tracks each packet (of `rows`, or of the batch): decoded IP with a transport, not
    malformed, not a later fragment."""
    return (pk.ipver[rows] > 0) & (pk.malformed[rows] == 0) & ~pk.later_fragment[rows] & (pk.proto[rows] >= 0)


def tracked_rows(pk: Packets) -> np.ndarray:
    """The rows of the packets the flow table tracks."""
    return np.flatnonzero(tracked(pk))


BATCH_COLUMNS = ("frame", "ts_ns", "iface", "caplen", "wirelen", "start", "end", "linktype")  # from the raw batch
# Every column of a decoded batch but `data`: its type, and the value of a packet no layer fills it in for (the
# raw batch's columns are always filled: their initial value is never used).
COLUMN_TYPES: dict[str, tuple[type, int]] = {
    **dict.fromkeys(BATCH_COLUMNS, (np.int64, 0)),
    **dict.fromkeys(("net", "vlan_depth", "ipver", "ttl", "ip_id", "ip_len", "tunnel_depth", "sport", "dport",
                     "tcp_flags", "seq", "ack", "win", "tcp_hlen", "sack_blocks", "payload_len", "payload_cap",
                     "payload_off"), (np.int64, 0)),
    **dict.fromkeys(("src_mac", "dst_mac", "l3", "l4", "proto", "mss", "wscale", "icmp_type", "icmp_code",
                     "icmp_mtu", "payload_head"), (np.int64, -1)),  # -1: no such layer, field or address
    **dict.fromkeys(("src_hi", "src_lo", "dst_hi", "dst_lo"), (np.uint64, 0)),
    **dict.fromkeys(("df", "fragment", "later_fragment", "sack_ok", "unknown_link"), (bool, False)),
    "malformed": (np.uint8, 0),
}


class ColumnSpace(Protocol):
    """Where the decoder puts a batch's columns: arrays of their own, or (readahead.py) a shared slot."""

    def new(self, name: str, n: int) -> np.ndarray:
        """Column `name` for `n` packets, each holding the column's initial value (COLUMN_TYPES)."""
        ...

    def put(self, name: str, values: np.ndarray) -> np.ndarray:
        """Column `name` holding `values` (the very array, where the space allows)."""
        ...


class OwnArrays:
    """Each column an array of its own; the raw batch's columns are used as they are."""

    def new(self, name: str, n: int) -> np.ndarray:
        dtype, fill = COLUMN_TYPES[name]
        return np.full(n, fill, dtype=dtype)

    def put(self, name: str, values: np.ndarray) -> np.ndarray:
        return values


class _Decoder:
    """Fills the columns of one batch; each step works on the subset of rows it applies to."""

    def __init__(self, batch: RawBatch, iface_linktypes: np.ndarray, space: ColumnSpace) -> None:
        n = len(batch)
        self.g = Gather(batch.data)
        linktype = iface_linktypes[batch.iface] if n else np.zeros(0, np.int64)
        given = (batch.frame, batch.ts_ns, batch.iface, batch.caplen, batch.wirelen, batch.offset,
                 batch.offset + batch.caplen, linktype)
        self.cols: dict[str, np.ndarray] = {"data": batch.data}
        self.cols.update((name, space.put(name, values)) for name, values in zip(BATCH_COLUMNS, given, strict=True))
        self.cols.update((name, space.new(name, n)) for name in COLUMN_TYPES if name not in BATCH_COLUMNS)
        self.start, self.end, self.linktype = self.cols["start"], self.cols["end"], self.cols["linktype"]
        self.wire_end = batch.offset + batch.wirelen
        self.cols["payload_off"][:] = self.end  # no payload: it would start where the captured bytes end

    def mark(self, rows: np.ndarray, kind: str) -> None:
        self.cols["malformed"][rows] = MALFORMED[kind]

    def run(self, common: bool = True) -> Packets:
        """Decode the batch; `common=False` decodes every packet by the general steps (tests compare the two)."""
        c = self.cols
        rest = self._common_frames() if common else np.arange(len(self.linktype))
        linktype = self.linktype[rest]
        for lt in np.unique(linktype):
            rows = rest[linktype == lt]
            layer = LINK_LAYERS.get(int(lt))
            if layer is None:
                c["unknown_link"][rows] = True
                continue
            layer(self, rows)
        self._network(rest[c["l3"][rest] >= 0])
        self._arp_fields_ok()
        sniff = np.flatnonzero((c["payload_cap"] >= 4) & (c["payload_head"] < 0))
        c["payload_head"][sniff] = self.g.be32(c["payload_off"][sniff])
        return Packets(**c)

    def _common_frames(self) -> np.ndarray:
        """Decode the frames of the common layout (COMMON_FRAME) as one record each; returns the rows left to the
        general steps.

        Why: the general steps go layer by layer, each on its subset of rows, so every header of every packet is
        gathered from the chunk on its own (numpy copies an unaligned record with a call per item) and every
        field is scattered into its column by index. Read once per packet and written with a mask, the frames of
        the 2M-packet benchmark (99 % of them common) decode in less than half the time. A frame qualifies only
        when the general steps would find nothing wrong with it up to its TCP options, and it gets exactly the
        values they would give it (tests compare the two)."""
        c, start, caplen = self.cols, self.start, self.cols["caplen"]
        size = COMMON_FRAME.itemsize
        records = self.g.block(start, COMMON_FRAME)
        eth, ip, tcp = records["eth"], records["ip"], records["tcp"]
        total, flags = ip["total"].astype(np.int64), ip["flags"].astype(np.int64)
        data_offset = tcp["off"].astype(np.int64)
        hlen = (data_offset >> 4) * 4
        plen = total - 20 - hlen
        ok = ((self.linktype == LINKTYPE_ETHERNET) & (start + size <= len(self.g.data))  # the record is all there
              & (caplen >= 54)  # the three headers are captured
              & (eth["etype"] == ETH_IPV4) & (ip["ver_ihl"] == 0x45) & (ip["proto"] == PROTO_TCP)  # no IP options
              & ((flags & 0x3FFF) == 0)  # not a fragment (more-fragments clear, offset 0)
              & (hlen >= 20) & (plen >= 0) & (14 + total <= c["wirelen"]))
        if not ok.any():
            return np.arange(len(start))
        payload_off = start + 34 + hlen
        cap = np.clip(np.minimum(self.end, payload_off + plen) - payload_off, 0, None)
        after_header = np.where(hlen == 20, records["at54"], records["at66"]).astype(np.int64)
        values = {
            "dst_mac": mac(eth["dst_hi"], eth["dst_lo"]), "src_mac": mac(eth["src_hi"], eth["src_lo"]),
            "net": ETH_IPV4, "l3": start + 14, "ipver": 4, "ip_id": ip["ip_id"], "df": (flags & 0x4000) != 0,
            "ttl": ip["ttl"], "proto": PROTO_TCP, "src_lo": IPV4_MAPPED | ip["src"].astype(np.uint64),
            "dst_lo": IPV4_MAPPED | ip["dst"].astype(np.uint64), "ip_len": total, "l4": start + 34,
            "sport": tcp["sport"], "dport": tcp["dport"], "seq": tcp["seq"], "ack": tcp["ack"],
            "tcp_flags": tcp["flags"] | ((data_offset & 1) << 8), "win": tcp["win"], "tcp_hlen": hlen,
            "payload_len": plen, "payload_off": payload_off, "payload_cap": cap,
            "payload_head": np.where((cap >= 4) & ((hlen == 20) | (hlen == 32)), after_header, -1),
        }
        for name, value in values.items():
            np.copyto(c[name], value, where=ok, casting="unsafe")
        # options other than NOP NOP timestamps (SYNs, SACKs) are walked by the general step, on their rows only
        timestamps_only = (np.minimum(hlen, caplen - 34) == 32) & (records["at54"] == TCP_TIMESTAMPS_ONLY)
        self._tcp_options(np.flatnonzero(ok & (hlen > 20) & ~timestamps_only))
        return np.flatnonzero(~ok)

    # -- network layer ---------------------------------------------------------------------------------------

    def _network(self, rows: np.ndarray) -> None:
        c = self.cols
        for depth in range(MAX_LAYERS + 1):
            if not len(rows):
                return
            if depth == MAX_LAYERS:
                self.mark(rows, "too-many-layers")
                return
            c["tunnel_depth"][rows] = depth
            v4 = rows[c["net"][rows] == ETH_IPV4]
            v6 = rows[c["net"][rows] == ETH_IPV6]
            inner = np.concatenate([self._ipv4(v4), self._ipv6(v6)])
            done = np.setdiff1d(rows, inner, assume_unique=True)
            self._transport(done[(c["proto"][done] >= 0) & (c["malformed"][done] == 0)])
            rows = inner

    def _ipv4(self, rows: np.ndarray) -> np.ndarray:
        """Decode IPv4 headers; returns the rows whose payload is another IP packet (tunnels)."""
        c, g = self.cols, self.g
        l3 = c["l3"][rows]
        short = l3 + 20 > self.end[rows]
        self.mark(rows[short], "truncated-ip-header")
        rows, l3 = rows[~short], l3[~short]
        h = g.block(l3, IPV4_HEADER)
        b0 = h["ver_ihl"].astype(np.int64)
        bad_ver = (b0 >> 4) != 4
        self.mark(rows[bad_ver], "bad-ip-version")
        ihl = (b0 & 0xF) * 4
        total = h["total"].astype(np.int64)
        bad_ihl = ~bad_ver & ((ihl < 20) | (l3 + ihl > self.end[rows]) | (total < ihl))
        self.mark(rows[bad_ihl], "bad-ip-header-length")
        too_long = ~bad_ver & ~bad_ihl & (l3 + total > self.wire_end[rows])
        self.mark(rows[too_long], "ip-length-exceeds-frame")
        ok = ~(bad_ver | bad_ihl | too_long)
        rows, l3, ihl, total, h = rows[ok], l3[ok], ihl[ok], total[ok], h[ok]
        c["ipver"][rows] = 4
        flags = h["flags"].astype(np.int64)
        c["ip_id"][rows] = h["ip_id"]
        c["df"][rows] = (flags & 0x4000) != 0
        frag_off = flags & 0x1FFF
        c["fragment"][rows] = ((flags & 0x2000) != 0) | (frag_off > 0)
        c["later_fragment"][rows] = frag_off > 0
        c["ttl"][rows] = h["ttl"]
        proto = h["proto"].astype(np.int64)
        c["proto"][rows] = proto
        c["src_hi"][rows] = 0
        c["src_lo"][rows] = IPV4_MAPPED | h["src"].astype(np.uint64)
        c["dst_hi"][rows] = 0
        c["dst_lo"][rows] = IPV4_MAPPED | h["dst"].astype(np.uint64)
        c["ip_len"][rows] = total
        c["l4"][rows] = l3 + ihl
        c["payload_len"][rows] = total - ihl
        return self._tunnelled(rows, frag_off == 0)

    def _ipv6(self, rows: np.ndarray) -> np.ndarray:
        c, g = self.cols, self.g
        l3 = c["l3"][rows]
        short = l3 + 40 > self.end[rows]
        self.mark(rows[short], "truncated-ip-header")
        rows, l3 = rows[~short], l3[~short]
        h = g.block(l3, IPV6_HEADER)
        bad_ver = (h["ver"] >> 4) != 6
        self.mark(rows[bad_ver], "bad-ip-version")
        plen = h["plen"].astype(np.int64)
        too_long = ~bad_ver & (l3 + 40 + plen > self.wire_end[rows])
        self.mark(rows[too_long], "ip-length-exceeds-frame")
        ok = ~(bad_ver | too_long)
        rows, l3, plen, h = rows[ok], l3[ok], plen[ok], h[ok]
        c["ipver"][rows] = 6
        c["ttl"][rows] = h["hop_limit"]
        for name in ("src_hi", "src_lo", "dst_hi", "dst_lo"):
            c[name][rows] = h[name]
        c["ip_len"][rows] = 40 + plen
        nh = h["next"].astype(np.int64)
        pos = l3 + 40
        first_fragment = np.ones(len(rows), dtype=bool)
        for _ in range(MAX_LAYERS):
            ext = np.isin(nh, list(IPV6_EXTENSIONS))
            if not ext.any():
                break
            e = np.flatnonzero(ext)
            hdr_len = np.where(nh[e] == 51, (g.u8(pos[e] + 1) + 2) * 4, (g.u8(pos[e] + 1) + 1) * 8)
            frag = nh[e] == 44
            hdr_len[frag] = 8
            fr = e[frag]
            frag_field = g.be16(pos[fr] + 2)
            c["fragment"][rows[fr]] = True
            later = (frag_field >> 3) > 0
            c["later_fragment"][rows[fr]] = later
            first_fragment[fr] &= ~later
            nh[e] = g.u8(pos[e])
            pos[e] = pos[e] + hdr_len
        else:
            stuck = np.isin(nh, list(IPV6_EXTENSIONS))
            self.mark(rows[stuck], "too-many-layers")
            rows, pos, nh, l3, plen, first_fragment = (
                a[~stuck] for a in (rows, pos, nh, l3, plen, first_fragment)
            )
        beyond = pos > l3 + 40 + plen
        self.mark(rows[beyond], "bad-ip-header-length")
        rows, pos, nh, l3, plen, first_fragment = (a[~beyond] for a in (rows, pos, nh, l3, plen, first_fragment))
        c["proto"][rows] = nh
        c["l4"][rows] = pos
        c["payload_len"][rows] = l3 + 40 + plen - pos
        return self._tunnelled(rows, first_fragment)

    def _tunnelled(self, rows: np.ndarray, whole: np.ndarray) -> np.ndarray:
        """Rows whose IP payload is itself IP (IP-in-IP, 6in4, GRE): re-point `l3` at the inner header."""
        c, g = self.cols, self.g
        proto = c["proto"][rows]
        ipip = whole & ((proto == PROTO_IPIP) | (proto == PROTO_IPV6))
        gre = whole & (proto == PROTO_GRE)
        inner = rows[ipip]
        c["net"][inner] = np.where(c["proto"][inner] == PROTO_IPIP, ETH_IPV4, ETH_IPV6)
        c["l3"][inner] = c["l4"][inner]
        gre_rows = rows[gre]
        if len(gre_rows):
            l4 = c["l4"][gre_rows]
            flags = g.be16(l4)
            ptype = g.be16(l4 + 2)
            hdr = 4 + 4 * (((flags & 0x8000) != 0).astype(np.int64) + ((flags & 0x2000) != 0) + ((flags & 0x1000) != 0))
            is_ip = (ptype == ETH_IPV4) | (ptype == ETH_IPV6)
            carries_ip = ((flags & 0x7) == 0) & is_ip & (l4 + 4 <= self.end[gre_rows])
            gre_rows, l4, hdr, ptype = gre_rows[carries_ip], l4[carries_ip], hdr[carries_ip], ptype[carries_ip]
            c["net"][gre_rows] = ptype
            c["l3"][gre_rows] = l4 + hdr
            inner = np.concatenate([inner, gre_rows])
        return np.sort(inner)

    # -- transport layer -------------------------------------------------------------------------------------

    def _transport(self, rows: np.ndarray) -> None:
        c = self.cols
        rows = rows[~c["later_fragment"][rows]]
        proto = c["proto"][rows]
        self._tcp(rows[proto == PROTO_TCP])
        self._udp(rows[proto == PROTO_UDP])
        self._icmp(rows[(proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)])

    def _l4_captured(self, rows: np.ndarray, size: int) -> np.ndarray:
        """Rows whose first `size` L4 bytes are present; the others are counted as truncated."""
        c = self.cols
        ok = c["l4"][rows] + size <= self.end[rows]
        cut = rows[~ok]
        # a header cut by the capture's snaplen is a capture-quality matter, not a malformed packet
        self.mark(cut[c["caplen"][cut] >= c["wirelen"][cut]], "truncated-l4-header")
        return rows[ok]

    def _payload(self, rows: np.ndarray, hlen: np.ndarray) -> None:
        c = self.cols
        plen = c["payload_len"][rows] - hlen
        neg = plen < 0
        self.mark(rows[neg], "l4-length-negative")
        plen = np.maximum(plen, 0)
        off = c["l4"][rows] + hlen
        c["payload_len"][rows] = plen
        c["payload_off"][rows] = off
        c["payload_cap"][rows] = np.clip(np.minimum(self.end[rows], off + plen) - off, 0, None)

    def _tcp(self, rows: np.ndarray) -> None:
        c, g = self.cols, self.g
        rows = self._l4_captured(rows, 20)
        l4 = c["l4"][rows]
        h = g.block(l4, TCP_HEADER)
        c["sport"][rows] = h["sport"]
        c["dport"][rows] = h["dport"]
        c["seq"][rows] = h["seq"]
        c["ack"][rows] = h["ack"]
        b12 = h["off"].astype(np.int64)
        hlen = (b12 >> 4) * 4
        c["tcp_flags"][rows] = h["flags"] | ((b12 & 1) << 8)
        c["win"][rows] = h["win"]
        bad = hlen < 20
        self.mark(rows[bad], "bad-tcp-header-length")
        c["tcp_hlen"][rows] = hlen
        self._payload(rows[~bad], hlen[~bad])
        self._tcp_options(rows[~bad & (hlen > 20)])

    def _tcp_options(self, rows: np.ndarray) -> None:
        """Walk the option TLVs of all rows in lock-step: MSS, window scale, SACK-permitted, SACK blocks."""
        c, g = self.cols, self.g
        pos = c["l4"][rows] + 20
        stop = np.minimum(c["l4"][rows] + c["tcp_hlen"][rows], self.end[rows])
        ts_only = (stop - pos == 12) & (g.be32(pos) == TCP_TIMESTAMPS_ONLY)
        rows, pos, stop = rows[~ts_only], pos[~ts_only], stop[~ts_only]
        for _ in range(40):  # 40 option bytes at most, so 40 steps always suffice
            live = pos < stop
            if not live.any():
                return
            rows, pos, stop = rows[live], pos[live], stop[live]
            kind = g.u8(pos)
            length = np.where(kind == 1, 1, g.u8(pos + 1))
            usable = (kind != 0) & (length >= 1) & ((kind == 1) | (length >= 2)) & (pos + length <= stop)
            rows, pos, stop, kind, length = rows[usable], pos[usable], stop[usable], kind[usable], length[usable]
            mss = (kind == 2) & (length == 4)
            c["mss"][rows[mss]] = g.be16(pos[mss] + 2)
            ws = (kind == 3) & (length == 3)
            c["wscale"][rows[ws]] = g.u8(pos[ws] + 2)
            c["sack_ok"][rows[kind == 4]] = True
            sack = kind == 5
            c["sack_blocks"][rows[sack]] = (length[sack] - 2) // 8
            pos = pos + length

    def _udp(self, rows: np.ndarray) -> None:
        c, g = self.cols, self.g
        rows = self._l4_captured(rows, 8)
        l4 = c["l4"][rows]
        c["sport"][rows] = g.be16(l4)
        c["dport"][rows] = g.be16(l4 + 2)
        self._payload(rows, np.full(len(rows), 8))

    def _icmp(self, rows: np.ndarray) -> None:
        c, g = self.cols, self.g
        rows = self._l4_captured(rows, 8)
        l4 = c["l4"][rows]
        icmp_type, code = g.u8(l4), g.u8(l4 + 1)
        c["icmp_type"][rows] = icmp_type
        c["icmp_code"][rows] = code
        v6 = c["proto"][rows] == PROTO_ICMPV6
        frag_needed = ~v6 & (icmp_type == 3) & (code == 4)
        too_big = v6 & (icmp_type == 2)
        c["icmp_mtu"][rows[frag_needed]] = g.be16(l4[frag_needed] + 6)
        c["icmp_mtu"][rows[too_big]] = g.be32(l4[too_big] + 4)
        self._payload(rows, np.full(len(rows), 8))

    def _arp_fields_ok(self) -> None:
        c = self.cols
        arp = np.flatnonzero(c["net"] == ETH_ARP)
        short = arp[c["l3"][arp] + 28 > self.end[arp]]
        self.mark(short, "truncated-arp")


def decode_batch(batch: RawBatch, iface_linktypes: np.ndarray, space: ColumnSpace | None = None, *,
                 common: bool = True) -> Packets:
    """Decode every packet of a batch into columns (in `space`, arrays of their own by default).
    `iface_linktypes[i]` is interface i's link type; `common=False`: no common-layout path (see _Decoder.run)."""
    return _Decoder(batch, iface_linktypes, space or OwnArrays()).run(common)
