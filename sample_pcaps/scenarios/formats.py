"""Container and link-layer variants, each carrying a short healthy conversation.

These exist for the reader and the L2/L3 decoders: the traffic is deliberately boring so that any finding
on these files is a decoding bug (wrong byte order, wrong timestamp unit, wrong link header length, a
non-Ethernet link decoded as Ethernet).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, Capture, healthy_mix, host, jitter, ms, sec
from sample_pcaps.writer import (
    OPT_SHB_HARDWARE,
    OPT_SHB_OS,
    OPT_SHB_USERAPPL,
    TSRESOL_NSEC,
    TSRESOL_USEC,
    Block,
    CaptureFile,
    CustomBlock,
    Epb,
    Interface,
    Pb,
    PcapFile,
    PcapngFile,
    Record,
    Section,
    Spb,
    UnknownBlock,
)

PEN_DOCUMENTATION = 32473  # IANA "example" enterprise number (RFC 5612)
TSRESOL_2_POW_20 = 0x80 | 20
TICK_2_POW_20 = 1_953_125  # ns: the smallest step exactly representable both in ns and in 2^-20 s units
SHB_OPTIONS = [
    (OPT_SHB_HARDWARE, b"x86_64"),
    (OPT_SHB_OS, b"Linux 6.1"),
    (OPT_SHB_USERAPPL, b"pcapsense sample_pcaps generator"),
]


def _mix_capture(rng: random.Random, linktype: int, local: bytes | None = None) -> Capture:
    cap = Capture(rng, (linktype,), local=local)
    healthy_mix(cap, BASE_NS, rng)
    return cap


def _with_sub_microseconds(records: Iterable[Record], rng: random.Random) -> list[Record]:
    """Add sub-microsecond parts so a reader that drops nanoseconds is caught; order is preserved."""
    out: list[Record] = []
    last = 0
    for rec in records:
        ts = max(rec.ts_ns + rng.randrange(1, 1000), last + 1)
        out.append(Record(ts, rec.data, rec.iface))
        last = ts
    return out


def _snap(records: Iterable[Record], tick: int) -> list[Record]:
    """Floor timestamps to a multiple of `tick` (order-preserving) for a binary-fraction resolution."""
    return [Record(r.ts_ns - r.ts_ns % tick, r.data, r.iface) for r in records]


@scenario("fmt_pcap_usec_le.pcap", "Classic pcap, microsecond magic, little-endian, Ethernet; healthy ARP/DNS/HTTP.")
def pcap_usec_le(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_EN10MB).pcap()


@scenario(
    "fmt_pcap_nsec_le.pcap",
    "Classic pcap, nanosecond magic 0xa1b23c4d, little-endian; every timestamp has a sub-microsecond part.",
)
def pcap_nsec_le(rng: random.Random) -> CaptureFile:
    records = _with_sub_microseconds(_mix_capture(rng, b.DLT_EN10MB).records(), rng)
    return PcapFile(b.DLT_EN10MB, records, nsec=True)


@scenario("fmt_pcap_usec_be.pcap", "Classic pcap, microsecond magic, big-endian headers; healthy ARP/DNS/HTTP.")
def pcap_usec_be(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_EN10MB).pcap(big_endian=True)


@scenario(
    "fmt_pcap_snaplen96.pcap",
    "Classic pcap with snaplen 96: frames longer than 96 bytes are cut (caplen 96 < orig len); healthy traffic.",
)
def pcap_snaplen96(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_EN10MB).pcap(snaplen=96)


@scenario(
    "fmt_sll.pcap",
    "Linux cooked capture v1 (DLT 113, 'any' device) with packet types host/outgoing/broadcast; healthy traffic.",
)
def pcap_sll(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_LINUX_SLL, local=host("192.168.1.10", 11).mac).pcap()


@scenario("fmt_sll2.pcap", "Linux cooked capture v2 (DLT 276) with interface index and packet types; healthy traffic.")
def pcap_sll2(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_LINUX_SLL2, local=host("192.168.1.10", 11).mac).pcap()


@scenario(
    "fmt_vlan_qinq.pcap",
    "Ethernet with VLAN tags: one conversation single-tagged 802.1Q VID 20, one QinQ (0x88a8 VID 100 outer, "
    "0x8100 VID 20 inner).",
)
def pcap_vlan_qinq(rng: random.Random) -> CaptureFile:
    dot1q = Capture(rng, tags=((b.ETH_VLAN, 20),))
    healthy_mix(dot1q, BASE_NS, rng, index=1)
    qinq = Capture(rng, tags=((b.ETH_QINQ, 100), (b.ETH_VLAN, 20)))
    healthy_mix(qinq, BASE_NS + ms(400), rng, index=2)
    records = sorted(dot1q.records() + qinq.records(), key=lambda r: r.ts_ns)
    return PcapFile(b.DLT_EN10MB, records)


@scenario("fmt_raw_ipv4.pcap", "LINKTYPE_RAW (DLT 101): bare IPv4 packets, no link header; healthy DNS/HTTP.")
def pcap_raw_ipv4(rng: random.Random) -> CaptureFile:
    return _mix_capture(rng, b.DLT_RAW).pcap()


@scenario("fmt_raw_ipv6.pcap", "LINKTYPE_IPV6 (DLT 229): bare IPv6 packets; healthy DNS (AAAA) and HTTP over IPv6.")
def pcap_raw_ipv6(rng: random.Random) -> CaptureFile:
    cap = Capture(rng, (b.DLT_IPV6,))
    healthy_mix(cap, BASE_NS, rng, v6=True)
    return cap.pcap()


def _v4_and_v6(rng: random.Random, linktype: int) -> CaptureFile:
    cap = Capture(rng, (linktype,))
    t = healthy_mix(cap, BASE_NS, rng, index=1)
    healthy_mix(cap, t + ms(250), rng, index=2, v6=True)
    return cap.pcap()


@scenario(
    "fmt_null_loop.pcap",
    "BSD loopback DLT_NULL (0): 4-byte address family in host (little-endian) order, AF_INET 2 and Darwin "
    "AF_INET6 30; healthy IPv4 then IPv6 traffic.",
)
def pcap_null(rng: random.Random) -> CaptureFile:
    return _v4_and_v6(rng, b.DLT_NULL)


@scenario(
    "fmt_loop.pcap",
    "OpenBSD loopback DLT_LOOP (108): address family always big-endian, AF_INET 2 and AF_INET6 24; healthy "
    "IPv4 then IPv6 traffic.",
)
def pcap_loop(rng: random.Random) -> CaptureFile:
    return _v4_and_v6(rng, b.DLT_LOOP)


@scenario(
    "fmt_unknown_linktype.pcap",
    "Link type 147 (USER0). Payloads happen to be Ethernet frames with ARP requests repeated for one target "
    "without reply: a reader must count these 6 packets and never decode them as Ethernet (so arp-unanswered "
    "must stay silent).",
)
def pcap_user0(rng: random.Random) -> CaptureFile:
    cap = Capture(rng, (b.DLT_USER0,))
    asker = host("10.9.9.10", 9010)
    for i in range(6):
        cap.arp_request(BASE_NS + sec(i) + jitter(rng, 5000), asker, "10.9.9.99")
    return cap.pcap()


def _direction_flag(rec: Record, local: bytes) -> int:
    """epb_flags direction bits: 1 inbound, 2 outbound, judged by the Ethernet source address."""
    return 2 if rec.data[6:12] == local else 1


@scenario(
    "fmt_pcapng_two_if.pcapng",
    "pcapng, one little-endian section, two interfaces: 0 = Ethernet eth0 (if_tsresol 10^-6, EPBs with "
    "epb_flags), 1 = raw IPv4 tun0 (DLT 228, if_tsresol 10^-9, nanosecond timestamps, IDB placed after the "
    "first packets). EPBs interleaved; also one SPB (gratuitous ARP, no timestamp), one custom block 0xBAD "
    "and one unknown block type 0x80001234 that must be skipped.",
)
def pcapng_two_if(rng: random.Random) -> CaptureFile:
    cap = Capture(rng, (b.DLT_EN10MB, b.DLT_IPV4))
    healthy_mix(cap, BASE_NS, rng, index=1, iface=0)
    healthy_mix(cap, BASE_NS + ms(7), rng, index=2, iface=1)
    eth = [r for r in cap.records() if r.iface == 0]
    tun = _with_sub_microseconds((r for r in cap.records() if r.iface == 1), rng)
    records = sorted(eth + tun, key=lambda r: r.ts_ns)
    local = host("192.168.1.10", 11).mac
    gateway = host("192.168.1.1", 101)
    garp = b.ethernet(
        b.BROADCAST, gateway.mac, b.ETH_ARP, b.arp(b.ARP_REQUEST, gateway.mac, gateway.ip, b"\0" * 6, gateway.ip)
    )
    blocks: list[Block] = [Interface(b.DLT_EN10MB, "eth0", tsresol=TSRESOL_USEC)]
    tun_declared = False
    for i, rec in enumerate(records):
        if rec.iface == 1 and not tun_declared:
            blocks.append(Interface(b.DLT_IPV4, "tun0", tsresol=TSRESOL_NSEC))
            tun_declared = True
        blocks.append(Epb(rec, _direction_flag(rec, local) if rec.iface == 0 else None))
        if i == 2:
            blocks.append(Spb(garp))
        if i == 6:
            blocks.append(CustomBlock(PEN_DOCUMENTATION, b"pcapsense: custom block, skip me"))
        if i == 9:
            blocks.append(UnknownBlock(0x80001234, b"unknown block type; readers skip it by length"))
    return PcapngFile([Section(blocks, options=SHB_OPTIONS)])


@scenario(
    "fmt_pcapng_two_sections_be.pcapng",
    "pcapng with two sections. Section 1: little-endian, Ethernet IDB without if_tsresol (default 10^-6), "
    "section length -1. Section 2: big-endian, explicit section length, IDB 0 Ethernet with if_tsresol 2^-20, "
    "IDB 1 raw IPv6 (DLT 229, 10^-9); interface ids restart at 0; some IPv6 packets in obsolete Packet "
    "Blocks (type 2).",
)
def pcapng_two_sections(rng: random.Random) -> CaptureFile:
    first = Capture(rng)
    t = healthy_mix(first, BASE_NS, rng, index=1)
    second = Capture(rng, (b.DLT_EN10MB, b.DLT_IPV6))
    t = healthy_mix(second, t + sec(1), rng, index=3, iface=0)
    healthy_mix(second, t - ms(20), rng, index=4, v6=True, iface=1)
    eth = _snap((r for r in second.records() if r.iface == 0), TICK_2_POW_20)
    tun = _with_sub_microseconds((r for r in second.records() if r.iface == 1), rng)
    later = sorted(eth + tun, key=lambda r: r.ts_ns)
    blocks_1: list[Block] = [Interface(b.DLT_EN10MB, "eth0")] + [Epb(r) for r in first.records()]
    blocks_2: list[Block] = [
        Interface(b.DLT_EN10MB, "eth1", tsresol=TSRESOL_2_POW_20),
        Interface(b.DLT_IPV6, "tun6", tsresol=TSRESOL_NSEC),
    ]
    tun_seen = 0
    for rec in later:
        obsolete = rec.iface == 1 and tun_seen % 3 == 0
        tun_seen += rec.iface
        blocks_2.append(Pb(rec) if obsolete else Epb(rec))
    return PcapngFile(
        [
            Section(blocks_1, options=SHB_OPTIONS),
            Section(blocks_2, big_endian=True, write_length=True, options=SHB_OPTIONS),
        ]
    )
