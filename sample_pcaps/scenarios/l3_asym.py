"""L3: asymmetric routing. The proof that holds on one capture is a client ACK for `server_ISN + 1` of a
SYN-ACK the capture never saw; across interfaces, SYN and SYN-ACK on different links with a different
next-hop MAC and TTL. The negative is ordinary capture truncation: flows seen from the middle, both ways.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import (
    BASE_NS,
    C,
    Capture,
    Host,
    S,
    TcpConn,
    host,
    jitter,
    ms,
    tls12_handshake,
)
from sample_pcaps.writer import CaptureFile, Epb, Interface, PcapngFile, Section

ROUTER_A = host("10.50.0.1", 5001)
ROUTER_B = host("10.50.0.2", 5002)


def _web_session(conn: TcpConn, rng: random.Random, tls: bool) -> None:
    """A complete client session; what the capture shows depends on which side is invisible."""
    conn.handshake()
    if tls:
        tls12_handshake(conn, rng, b"shop.example.com")
        conn.exchange(
            b.application_data(rng, rng.randrange(300, 700)), b.application_data(rng, rng.randrange(2000, 9000))
        )
    else:
        request = b.http_request(
            "GET", f"/item/{rng.randrange(1000)}", b"shop.example.com", [(b"User-Agent", b"Mozilla/5.0")]
        )
        conn.exchange(request, b.http_response(200, "OK", rng.randbytes(rng.randrange(800, 6000))))
    conn.close(C)


@scenario(
    "asym_routing.pcap",
    "Capture on the forward path only: 24 clients in 10.50.1.0/24 connect to 203.0.113.10 (:80 and :443) "
    "over 20 s. Each flow shows the client's SYN, then the client's ACK acknowledging server_ISN+1 of a "
    "SYN-ACK that is not in the capture, the request / TLS client messages, ACKs for server data never "
    "seen, and the client's FIN; not a single server packet is captured.",
    fire=("asymmetric-routing",),
    unsure=("tls-handshake-failure",),
)
def asym_routing(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    server = Host("203.0.113.10", ROUTER_A.mac, ttl=55)
    for i in range(24):
        client = host(f"10.50.1.{10 + i}", 5100 + i)
        tls = i % 3 == 0
        start = BASE_NS + ms(830 * i) + jitter(rng, 200_000)
        conn = TcpConn(
            cap, client, server, rng.randrange(40000, 60000), 443 if tls else 80, t=start, rtt=ms(28), invisible=(S,)
        )
        _web_session(conn, rng, tls)
    return cap.pcap()


@scenario(
    "asym_routing_ifaces.pcapng",
    "pcapng with two Ethernet interfaces: uplinkA (router 02:00:00:00:13:89) and uplinkB (router "
    "02:00:00:00:13:8a). 8 flows from 10.50.2.0/24 to 198.51.100.20:80 send SYN and all client packets on "
    "interface 0 while SYN-ACK and all server packets arrive on interface 1 from the other router with TTL "
    "57; 2 flows start symmetric (server TTL 60 via uplinkA) and switch mid-flow to uplinkB/TTL 57; 4 flows "
    "to 198.51.100.30 stay symmetric on uplinkA (TTL 60).",
    fire=("asymmetric-routing",),
)
def asym_routing_ifaces(rng: random.Random) -> CaptureFile:
    cap = Capture(rng, (b.DLT_EN10MB, b.DLT_EN10MB))
    moved, steady = Host("198.51.100.20", ROUTER_A.mac, ttl=60), Host("198.51.100.30", ROUTER_A.mac, ttl=60)
    back_path = moved.seen_via(ROUTER_B.mac, 57)
    for i in range(14):
        client = host(f"10.50.2.{10 + i}", 5200 + i)
        start = BASE_NS + ms(700 * i) + jitter(rng, 100_000)
        server = steady if i >= 10 else moved
        asymmetric = i < 8
        conn = TcpConn(
            cap,
            client,
            server,
            rng.randrange(40000, 60000),
            80,
            t=start,
            rtt=ms(22),
            reply_via=back_path if asymmetric else None,
            ifaces=(0, 1 if asymmetric else 0),
        )
        conn.handshake()
        conn.exchange(b.http_request("GET", "/", b"app.example.com"), b.http_response(200, "OK", rng.randbytes(3000)))
        if 8 <= i < 10:
            conn.src, conn.ifaces = (client, back_path), (0, 1)
        conn.idle(ms(150))
        conn.exchange(
            b.http_request("GET", "/data", b"app.example.com"), b.http_response(200, "OK", rng.randbytes(5000))
        )
        conn.close(C)
    blocks = [Interface(b.DLT_EN10MB, "uplinkA"), Interface(b.DLT_EN10MB, "uplinkB")]
    blocks += [Epb(rec) for rec in cap.records()]
    return PcapngFile([Section(blocks)])


@scenario(
    "asym_neg_midstream.pcap",
    "Negative: capture started and stopped in the middle of 15 long-lived flows between 10.52.0.0/24 and "
    "198.51.100.0/24 (:443, :5432, :22). No handshakes; both directions are seen from the first packet "
    "(data, ACKs); 6 flows close with FIN inside the capture, the rest continue past its end.",
)
def asym_neg_midstream(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    gateway = host("10.52.0.1", 5201)
    for i in range(15):
        client = host(f"10.52.0.{20 + i}", 5220 + i)
        server = Host(f"198.51.100.{40 + i}", gateway.mac, ttl=52)
        port = (443, 5432, 22)[i % 3]
        payload = (lambda n: b.application_data(rng, n)) if port == 443 else rng.randbytes
        conn = TcpConn(
            cap,
            client,
            server,
            rng.randrange(40000, 60000),
            port,
            t=BASE_NS + jitter(rng, 900_000),
            rtt=ms(rng.randrange(5, 40)),
        )
        conn.established()
        if i % 2:
            conn.send(S, payload(rng.randrange(1000, 4000)))
        for _ in range(rng.randrange(3, 7)):
            conn.exchange(payload(rng.randrange(60, 400)), payload(rng.randrange(100, 2000)))
            conn.idle(ms(rng.randrange(200, 1500)))
        if i < 6:
            conn.close(C if i % 2 else S)
    return cap.pcap()
