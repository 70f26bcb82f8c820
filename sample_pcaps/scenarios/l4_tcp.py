"""L4: SYN flood (half-open build-up) and ephemeral-port / TIME_WAIT exhaustion, with their look-alikes:
a busy but healthy server, a port scan, a connection pool and a crowd of ordinary clients.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, jitter, ms, sec, us
from sample_pcaps.writer import CaptureFile

GATEWAY = host("10.0.0.1", 1)
WEB = host("10.0.0.80", 80)
API = host("10.0.0.5", 5)
SYNACK_BACKOFF = (sec(1), sec(3), sec(7))  # Linux tcp_synack_retries schedule, cumulative


def _spoofed_ip(rng: random.Random) -> str:
    """A random routable-looking IPv4 address (no 0/8, 10/8, 127/8 or multicast)."""
    first = rng.choice([n for n in range(1, 224) if n not in (10, 127)])
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _http_get(conn: TcpConn, rng: random.Random, path: str, host_header: bytes, body: int) -> None:
    conn.exchange(b.http_request("GET", path, host_header), b.http_response(200, "OK", rng.randbytes(body)))


def _half_open(cap: Capture, rng: random.Random, t: int, end: int) -> None:
    """One spoofed SYN (hping-style: no options, window 512) and the server's SYN-ACK plus its retries."""
    attacker = Host(_spoofed_ip(rng), GATEWAY.mac, ttl=rng.randrange(40, 250))
    sport, isn, server_isn = rng.randrange(1024, 65536), rng.getrandbits(32), rng.getrandbits(32)
    cap.ip(t, attacker, WEB, b.PROTO_TCP, b.tcp(attacker.ip, WEB.ip, sport, 80, isn, 0, b.SYN, window=512))
    synack = b.tcp(
        WEB.ip,
        attacker.ip,
        80,
        sport,
        server_isn,
        isn + 1,
        b.SYN | b.ACK,
        window=64240,
        options=b.tcp_syn_options(1460, wscale=None, sack_ok=False),
    )
    reply = t + us(rng.randrange(30, 120))
    for when in (reply, *(reply + d for d in SYNACK_BACKOFF)):
        if when <= end:
            cap.ip(when, WEB, attacker, b.PROTO_TCP, synack)


@scenario(
    "syn_flood.pcap",
    "Captured at 10.0.0.80: 2000 SYNs (no options, window 512) from random spoofed sources to 10.0.0.80:80 "
    "within 10 s (~200/s). Each gets a SYN-ACK, retransmitted after 1, 3 and 7 s while the capture lasts; no "
    "completing ACK ever arrives. 8 legitimate clients complete handshakes and HTTP GETs in between.",
    fire=("syn-flood",),
)
def syn_flood(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    start, end = BASE_NS + ms(500), BASE_NS + sec(10.8)
    for _ in range(2000):
        _half_open(cap, rng, start + us(rng.randrange(10_000_000)), end)
    for i in range(8):
        client = Host(f"198.51.100.{20 + i}", GATEWAY.mac, ttl=52)
        conn = TcpConn(
            cap,
            client,
            WEB,
            rng.randrange(32768, 61000),
            80,
            t=BASE_NS + sec(1.2 * i) + jitter(rng, 100_000),
            rtt=ms(30),
            near_client=False,
        )
        conn.handshake()
        _http_get(conn, rng, "/", b"www.example.com", 1800)
        conn.close(C)
    return cap.pcap()


@scenario(
    "syn_busy_healthy.pcap",
    "Negative: 200 complete connections in 3.2 s (~62 SYN/s, above naive SYN-rate alarms) from 100 clients in "
    "10.60.0.0/24 to 10.0.0.80:80; every handshake completes, one small GET each, client closes.",
)
def syn_busy_healthy(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    clients = [Host(f"10.60.0.{2 + i}", GATEWAY.mac, ttl=63) for i in range(100)]
    for i in range(200):
        conn = TcpConn(
            cap,
            clients[i % 100],
            WEB,
            rng.randrange(32768, 61000),
            80,
            t=BASE_NS + us(rng.randrange(3_200_000)),
            rtt=us(rng.randrange(800, 30_000)),
            near_client=False,
            timestamps=False,
        )
        conn.handshake()
        _http_get(conn, rng, f"/ping/{i}", b"www.example.com", rng.randrange(20, 200))
        conn.close(C)
    return cap.pcap()


@scenario(
    "port_scan.pcap",
    "Negative for syn-flood: one scanner 10.66.6.6 (fixed source port 61777) SYN-probes ports 1-1024 of "
    "10.0.0.80 in about 1 s; closed ports answer RST/ACK, open 22/80/443 answer SYN-ACK and the scanner "
    "resets them.",
)
def port_scan(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    scanner = Host("10.66.6.6", GATEWAY.mac, ttl=48)
    ports = list(range(1, 1025))
    rng.shuffle(ports)
    options = b.tcp_syn_options(1460, wscale=None, sack_ok=False)
    for i, port in enumerate(ports):
        t = BASE_NS + us(950 * i) + jitter(rng, 300)
        seq = rng.getrandbits(32)
        cap.ip(
            t,
            scanner,
            WEB,
            b.PROTO_TCP,
            b.tcp(scanner.ip, WEB.ip, 61777, port, seq, 0, b.SYN, window=1024, options=options),
        )
        reply = t + us(rng.randrange(40, 90))
        if port in (22, 80, 443):
            synack = b.tcp(
                WEB.ip,
                scanner.ip,
                port,
                61777,
                rng.getrandbits(32),
                seq + 1,
                b.SYN | b.ACK,
                window=64240,
                options=options,
            )
            cap.ip(reply, WEB, scanner, b.PROTO_TCP, synack)
            reset = b.tcp(scanner.ip, WEB.ip, 61777, port, seq + 1, 0, b.RST, window=0)
            cap.ip(reply + ms(30), scanner, WEB, b.PROTO_TCP, reset)
        else:
            cap.ip(
                reply,
                WEB,
                scanner,
                b.PROTO_TCP,
                b.tcp(WEB.ip, scanner.ip, port, 61777, 0, seq + 1, b.RST | b.ACK, window=0),
            )
    return cap.pcap()


def _short_request(conn: TcpConn, n: int) -> None:
    """The per-request connection: handshake, one tiny API call, client closes first (TIME_WAIT on client)."""
    conn.exchange(
        b.http_request("GET", f"/api/v1/status?id={n}", b"10.0.0.5:8080"),
        b.http_response(200, "OK", b'{"status":"ok"}', [(b"Content-Type", b"application/json")]),
    )
    conn.close(C)


def _challenge_then_retry(conn: TcpConn, old: TcpConn, n: int) -> None:
    """Server still holds the old 4-tuple: it answers the SYN with a bare ACK of the old connection, the
    client resets, and its SYN retransmission one second later succeeds."""
    isn, syn_at = conn.snd[C], conn.t
    conn.emit(C, b.SYN, at=syn_at)
    challenge = syn_at + conn.delay(S)
    old.emit(S, b.ACK, at=challenge)
    conn.emit(C, b.RST, seq=old.rcv[S], at=challenge + conn.delay(C))
    conn.t = syn_at + sec(1)
    conn.emit(C, b.SYN, seq=isn, at=conn.t)
    conn.t += conn.delay(S)
    conn.emit(S, b.SYN | b.ACK, at=conn.t)
    conn.t += conn.delay(C)
    conn.emit(C, b.ACK, at=conn.t)
    _short_request(conn, n)


PORT_LOW, PORT_COUNT = 40000, 1200


@scenario(
    "port_exhaustion.pcap",
    "Client 10.0.1.10 opens a new connection per request to 10.0.0.5:8080 at ~250/s for 10 s, source ports "
    "cycling sequentially through 40000-41199 and wrapping every ~4.8 s, so 4-tuples are reused long "
    "before the 60 s TIME_WAIT ends (client always closes first). ~3% of reuse SYNs get a bare ACK for the "
    "old connection (client RSTs, retries after 1 s) and ~3% get RST/ACK. New SYNs pause for 600 ms at "
    "t=7 s (connect() failing with EADDRNOTAVAIL).",
    fire=("port-exhaustion",),
)
def port_exhaustion(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    client = host("10.0.1.10", 110)
    previous: dict[int, TcpConn] = {}
    t, n = BASE_NS, 0
    while t < BASE_NS + sec(10):
        t += us(rng.randrange(2000, 6000))
        if BASE_NS + sec(7) <= t < BASE_NS + sec(7.6):
            continue
        port = PORT_LOW + n % PORT_COUNT
        conn = TcpConn(cap, client, API, port, 8080, t=t, rtt=us(rng.randrange(300, 700)), proc=us(40))
        old, roll = previous.get(port), rng.random()
        if old is not None and roll < 0.03:
            _challenge_then_retry(conn, old, n)
        elif old is not None and roll < 0.06:
            conn.emit(C, b.SYN, at=t)
            conn.emit(S, b.RST | b.ACK, seq=0, at=t + conn.delay(S))
        else:
            conn.handshake()
            _short_request(conn, n)
        previous[port] = conn
        n += 1
    return cap.pcap()


@scenario(
    "pool_reuse.pcap",
    "Negative: client 10.0.1.20 keeps a pool of 8 long-lived connections to 10.0.0.5:8080 and sends 30 "
    "requests over each during ~50 s; only 8 source ports, no churn, connections still open at the end.",
)
def pool_reuse(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    client = host("10.0.1.20", 120)
    for i in range(8):
        conn = TcpConn(cap, client, API, 45000 + 17 * i, 8080, t=BASE_NS + ms(12 * i), rtt=us(500))
        conn.handshake()
        for _ in range(30):
            conn.exchange(
                b.http_request("POST", "/api/v1/items", b"10.0.0.5:8080", body=rng.randbytes(rng.randrange(20, 120))),
                b.http_response(201, "Created", rng.randbytes(rng.randrange(10, 60))),
            )
            conn.idle(ms(rng.randrange(600, 2400)))
    return cap.pcap()


@scenario(
    "many_clients.pcap",
    "Negative: 100 different clients in 10.70.0.0/16 each make 2-3 short connections (random ephemeral "
    "ports) to 10.0.0.5:8080 over 30 s and close first; many connections per server port, few per client.",
)
def many_clients(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    for i in range(100):
        client = Host(f"10.70.{i // 50}.{10 + i % 50}", GATEWAY.mac, ttl=62)
        for _ in range(rng.randrange(2, 4)):
            conn = TcpConn(
                cap,
                client,
                API,
                rng.randrange(32768, 61000),
                8080,
                t=BASE_NS + us(rng.randrange(30_000_000)),
                rtt=us(rng.randrange(400, 4000)),
                near_client=False,
                timestamps=False,
            )
            conn.handshake()
            _short_request(conn, i)
    return cap.pcap()
