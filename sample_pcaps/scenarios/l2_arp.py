"""L2: broadcast storms from a switching loop, unanswered ARP / IPv6 neighbour discovery, and their look-alikes.

The negatives carry the traps a naive counter falls into: a big LAN where hundreds of hosts ARP once,
gratuitous ARP announcements and RFC 5227 probes that are unanswered by design, and IPv6 DAD.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, Capture, Host, dns_exchange, host, jitter, ms, sec, us
from sample_pcaps.writer import CaptureFile

MIN_FRAME = 60  # Ethernet minimum without FCS: what a receiver captures for short frames


def _padded(frame: bytes) -> bytes:
    return frame.ljust(MIN_FRAME, b"\0")


def _loop_copies(cap: Capture, frame: bytes, start: int, count: int, rng: random.Random, mean_gap_us: int) -> None:
    """The same frame again and again, as a bridging loop recirculates it."""
    t = start
    for _ in range(count):
        t += us(rng.randrange(mean_gap_us // 4, mean_gap_us * 7 // 4 + 1))
        cap.add(t, frame)


@scenario(
    "arp_storm.pcap",
    "Switching loop on 10.20.0.0/24 seen from 10.20.0.5: after 1 s of normal traffic (10.20.0.15 ARPs gateway "
    "10.20.0.1 and gets one reply), the byte-identical broadcast ARP request from 10.20.0.15 recirculates "
    "1000 times in ~2 s (~50 per 100 ms), together with 250 copies of a NetBIOS name query broadcast and 120 "
    "copies of a DHCPDISCOVER.",
    fire=("arp-storm",),
    unsure=("arp-unanswered",),
)
def arp_storm(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    asker, gateway, resolver = host("10.20.0.15", 2015), host("10.20.0.1", 2001), host("10.20.0.53", 2053)
    pc = host("10.20.0.44", 2044)
    cap.arp_request(BASE_NS, asker, gateway.ip)
    cap.arp_reply(BASE_NS + us(240), gateway, asker)
    dns_exchange(cap, BASE_NS + ms(3), asker, resolver, "intranet.example.com", answers=[b.a_record("10.20.0.80")])
    looped_arp = _padded(
        b.ethernet(b.BROADCAST, asker.mac, b.ETH_ARP, b.arp(b.ARP_REQUEST, asker.mac, asker.ip, b"\0" * 6, gateway.ip))
    )
    nbns = b.ipv4(
        pc.ip,
        "10.20.0.255",
        b.PROTO_UDP,
        b.udp(pc.ip, "10.20.0.255", 137, 137, b.nbns_query(0x8A11, "FILESRV")),
        ttl=128,
        ident=0x3B21,
        df=False,
    )
    dhcp_mac = b.mac("02:00:00:00:08:33")
    discover = b.udp("0.0.0.0", "255.255.255.255", 68, 67, b.dhcp_discover(dhcp_mac, 0x5EED1234))
    dhcp = b.ipv4("0.0.0.0", "255.255.255.255", b.PROTO_UDP, discover, ttl=64, ident=0, df=False)
    storm = BASE_NS + sec(1)
    _loop_copies(cap, looped_arp, storm, 1000, rng, 2000)
    _loop_copies(cap, b.ethernet(b.BROADCAST, pc.mac, b.ETH_IPV4, nbns), storm + ms(3), 250, rng, 8000)
    _loop_copies(cap, b.ethernet(b.BROADCAST, dhcp_mac, b.ETH_IPV4, dhcp), storm + ms(11), 120, rng, 16000)
    return cap.pcap()


@scenario(
    "arp_large_lan.pcap",
    "Negative: 300 hosts on 10.30.0.0/23 each ARP once for gateway 10.30.0.1 over ~10 s and each gets a "
    "reply within 1 ms (~30 requests/s, never near 30 per 100 ms).",
)
def arp_large_lan(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    gateway = host("10.30.0.1", 3001)
    for i in range(300):
        client = host(f"10.30.{(i + 10) // 256}.{(i + 10) % 256}", 3100 + i)
        t = BASE_NS + us(rng.randrange(10_000_000))
        cap.arp_request(t, client, gateway.ip)
        cap.arp_reply(t + us(rng.randrange(150, 900)), gateway, client)
    return cap.pcap()


@scenario(
    "arp_unanswered.pcap",
    "192.168.50.10 ARPs for 192.168.50.20 five times about 1 s apart and no MAC ever replies; "
    "2001:db8:50::10 sends 3 neighbour solicitations for 2001:db8:50::20 1 s apart with no advertisement. "
    "Background: ARP and ND for the gateway are answered and DNS works.",
    fire=("arp-unanswered",),
)
def arp_unanswered(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    asker, gateway, resolver = host("192.168.50.10", 5010), host("192.168.50.1", 5001), host("192.168.50.53", 5053)
    asker6, gateway6 = Host("2001:db8:50::10", asker.mac), Host("2001:db8:50::1", gateway.mac)
    cap.arp_request(BASE_NS, asker, gateway.ip)
    cap.arp_reply(BASE_NS + us(310), gateway, asker)
    dns_exchange(cap, BASE_NS + ms(2), asker, resolver, "printer.example.com", answers=[b.a_record("192.168.50.20")])
    for i in range(5):
        cap.arp_request(BASE_NS + ms(20) + sec(i) + jitter(rng, 3000), asker, "192.168.50.20")
    cap.neighbour_solicit(BASE_NS + ms(500), asker6, gateway6.ip)
    cap.neighbour_advert(BASE_NS + ms(500) + us(200), gateway6, asker6)
    for i in range(3):
        cap.neighbour_solicit(BASE_NS + ms(600) + sec(i) + jitter(rng, 3000), asker6, "2001:db8:50::20")
    return cap.pcap()


def _gratuitous(cap: Capture, t: int, sender: Host) -> None:
    """ARP announcement: sender IP == target IP, broadcast, no reply expected."""
    payload = b.arp(b.ARP_REQUEST, sender.mac, sender.ip, b"\0" * 6, sender.ip)
    cap.frame(t, sender.mac, b.BROADCAST, b.ETH_ARP, payload)


def _probe(cap: Capture, t: int, sender: Host, wanted: str) -> None:
    """RFC 5227 ARP probe: sender IP 0.0.0.0; silence means the address is free."""
    payload = b.arp(b.ARP_REQUEST, sender.mac, "0.0.0.0", b"\0" * 6, wanted)
    cap.frame(t, sender.mac, b.BROADCAST, b.ETH_ARP, payload)


@scenario(
    "arp_answered.pcap",
    "Negative: on 192.168.60.0/24 every real ARP request is answered (one needs a single retry); traps that "
    "are unanswered by design: 3 gratuitous ARP announcements from 192.168.60.30, 3 RFC 5227 probes "
    "(sender 0.0.0.0) for 192.168.60.77 from a booting host, and one IPv6 DAD solicitation from ::. "
    "IPv6 NS for the gateway is answered.",
)
def arp_answered(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    gateway, nas = host("192.168.60.1", 6001), host("192.168.60.40", 6040)
    clients = [host(f"192.168.60.{10 + i}", 6010 + i) for i in range(6)]
    for i, client in enumerate(clients):
        t = BASE_NS + ms(250 * i) + jitter(rng, 20_000)
        cap.arp_request(t, client, gateway.ip)
        cap.arp_reply(t + us(rng.randrange(120, 600)), gateway, client)
        cap.arp_request(t + ms(40), client, nas.ip)
        cap.arp_reply(t + ms(40) + us(rng.randrange(120, 600)), nas, client)
    slow = clients[0]
    cap.arp_request(BASE_NS + sec(2), slow, "192.168.60.41")
    cap.arp_request(BASE_NS + sec(3), slow, "192.168.60.41")
    cap.arp_reply(BASE_NS + sec(3) + us(400), host("192.168.60.41", 6041), slow)
    announcer = host("192.168.60.30", 6030)
    for i in range(3):
        _gratuitous(cap, BASE_NS + ms(500) + sec(i), announcer)
    booting = host("192.168.60.77", 6077)
    for i in range(3):
        _probe(cap, BASE_NS + ms(800) + ms(1300 * i) + jitter(rng, 200_000), booting, booting.ip)
    _gratuitous(cap, BASE_NS + sec(5), booting)
    client6, gateway6 = Host("2001:db8:60::10", clients[1].mac), Host("2001:db8:60::1", gateway.mac)
    cap.neighbour_solicit(BASE_NS + ms(1500), client6, gateway6.ip)
    cap.neighbour_advert(BASE_NS + ms(1500) + us(180), gateway6, client6)
    dad = b.icmpv6_ns("::", "2001:db8:60::99", None)
    group = b.solicited_node("2001:db8:60::99")
    cap.frame(
        BASE_NS + ms(1700),
        clients[2].mac,
        b.multicast_mac(group),
        b.ETH_IPV6,
        b.ipv6("::", group, b.PROTO_ICMPV6, dad, hlim=255),
    )
    return cap.pcap()
