"""L7 slow HTTP: slowloris (many connections whose headers never end) versus one slow client, idle
keep-alive connections (headers complete, then silence) and a slow upload (headers complete, body slow).
All captured at the web server 10.0.0.80:80.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, jitter, ms, sec
from sample_pcaps.writer import CaptureFile

GATEWAY = host("10.0.0.1", 1)
WEB = host("10.0.0.80", 80)
UA_LINE = b"User-Agent: Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.1)\r\n"


def _conn(cap: Capture, rng: random.Random, client: Host, t: int, port: int | None = None) -> TcpConn:
    """A connection to the web server; `port` pins the client port where several must not collide."""
    port = rng.randrange(32768, 61000) if port is None else port
    conn = TcpConn(cap, client, WEB, port, 80, t=t, rtt=ms(60), near_client=False)
    conn.handshake()
    return conn


def _trickle(conn: TcpConn, rng: random.Random, n: int, pieces: int, one_byte: bool) -> None:
    """Request line at once, then a header fragment every ~10 s; the blank line never comes."""
    conn.send(C, f"GET /?{n} HTTP/1.1\r\n".encode(), ack_every=1)
    for k in range(pieces):
        conn.idle(sec(10) + jitter(rng, 1_500_000) - ms(750))
        piece = UA_LINE[k : k + 1] if one_byte else f"X-a: {rng.randrange(1, 5000)}\r\n".encode()
        conn.send(C, piece, ack_every=1)


@scenario(
    "slowloris.pcap",
    "60 connections from 198.51.100.66 to 10.0.0.80:80 opened within 3 s; each sends 'GET /?N HTTP/1.1\\r\\n' "
    "and then, every ~10 s for 75 s, either one byte of a User-Agent line (odd connections) or a short "
    "'X-a: N\\r\\n' header line (even connections). No request ever reaches the blank line; all "
    "connections are still open when the capture ends.",
    fire=("slowloris",),
)
def slowloris(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    attacker = Host("198.51.100.66", GATEWAY.mac, ttl=50)
    for i in range(60):  # sequential source ports, as a kernel hands them out: no tuple is reused
        conn = _conn(cap, rng, attacker, BASE_NS + ms(50 * i) + jitter(rng, 20_000), port=41000 + i)
        _trickle(conn, rng, i, 7, one_byte=bool(i % 2))
    return cap.pcap()


def _normal_visit(cap: Capture, rng: random.Random, client: Host, t: int) -> None:
    conn = _conn(cap, rng, client, t)
    conn.exchange(
        b.http_request("GET", "/", b"www.example.com", [(b"User-Agent", b"Mozilla/5.0")]),
        b.http_response(200, "OK", rng.randbytes(rng.randrange(300, 1500))),
    )
    conn.close(C)


@scenario(
    "slow_client.pcap",
    "One connection from 192.0.2.77 to 10.0.0.80:80 behaves like a slowloris connection (request line, then "
    "one User-Agent byte every ~10 s for 70 s, never the blank line) while 6 other clients make normal "
    "complete requests every ~10 s. A single slow client, not an attack: a low-severity note at most.",
    unsure=("slowloris",),
)
def slow_client(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    slow = _conn(cap, rng, Host("192.0.2.77", GATEWAY.mac, ttl=47), BASE_NS)
    _trickle(slow, rng, 1, 7, one_byte=True)
    for i in range(6):
        client = Host(f"192.0.2.{100 + i}", GATEWAY.mac, ttl=53)
        for k in range(7):
            _normal_visit(cap, rng, client, BASE_NS + sec(1.3 * i + 10 * k) + jitter(rng, 500_000))
    return cap.pcap()


@scenario(
    "http_keepalive_idle.pcap",
    "Negative: 55 keep-alive connections from 198.51.100.70 to 10.0.0.80:80, each with 1-3 complete requests "
    "(headers end with the blank line) answered at once, then idle; the server closes each one after its "
    "65 s keep-alive timeout.",
)
def http_keepalive_idle(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    client = Host("198.51.100.70", GATEWAY.mac, ttl=50)
    for i in range(55):
        conn = _conn(cap, rng, client, BASE_NS + ms(60 * i) + jitter(rng, 30_000))
        for _ in range(rng.randrange(1, 4)):
            conn.exchange(
                b.http_request(
                    "GET",
                    f"/static/{rng.randrange(100)}.js",
                    b"www.example.com",
                    [(b"User-Agent", b"Mozilla/5.0"), (b"Connection", b"keep-alive")],
                ),
                b.http_response(200, "OK", rng.randbytes(rng.randrange(200, 900))),
            )
            conn.idle(ms(rng.randrange(20, 400)))
        conn.idle(sec(65))
        conn.close(S)
    return cap.pcap()


@scenario(
    "http_slow_upload.pcap",
    "Negative: 3 clients in 192.0.2.0/24 POST to 10.0.0.80:80/upload; the headers (Content-Length: 4000) "
    "are complete in the first segment, then the body trickles in 100-byte pieces every ~2 s for 80 s; the "
    "server answers 201 when the body is complete.",
)
def http_slow_upload(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    for i in range(3):
        conn = _conn(cap, rng, Host(f"192.0.2.{88 + i}", GATEWAY.mac, ttl=53), BASE_NS + sec(i))
        request = b.http_request(
            "POST",
            "/upload",
            b"files.example.com",
            [(b"Content-Type", b"application/octet-stream")],
            body=rng.randbytes(4000),
        )
        cut = request.index(b"\r\n\r\n") + 4
        conn.send(C, request[:cut], ack_every=1)
        for offset in range(cut, len(request), 100):
            conn.idle(sec(2) + jitter(rng, 200_000) - ms(100))
            conn.send(C, request[offset : offset + 100], ack_every=1)
        conn.send(S, b.http_response(201, "Created", b'{"stored":true}'))
        conn.close(C)
    return cap.pcap()
