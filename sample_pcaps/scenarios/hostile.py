"""Attacker-controlled strings in every field the report echoes (HTTP Host/User-Agent/path, DNS qname,
TLS SNI and certificate CN), to prove the report escapes them and copes with very long values.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, TcpConn, dns_exchange, host, ms, tls12_handshake
from sample_pcaps.writer import CaptureFile

HOSTILE = (
    b"<script>alert(1)</script>",
    b'"><img src=x onerror=alert(1)>',
    b'<a href="javascript:alert(3)">x</a>',
    b"{{7*7}}",
    b"caf\xe9\x00\xff",  # not UTF-8, with a NUL: decoding and escaping both get exercised
)
LONG = (b"<svg/onload=alert(5)>" * 239)[:5000]

CLIENT = host("192.168.66.6", 666)
GATEWAY = host("192.168.66.1", 661)
RESOLVER = Host("192.168.66.53", GATEWAY.mac, ttl=63)
WEB = Host("203.0.113.66", GATEWAY.mac, ttl=54)
TLS_SERVER = Host("203.0.113.67", GATEWAY.mac, ttl=54)


def _http(cap: Capture, rng: random.Random, t: int, value: bytes) -> None:
    conn = TcpConn(cap, CLIENT, WEB, rng.randrange(40000, 60000), 80, t=t, rtt=ms(25))
    conn.handshake()
    request = b"GET /search?q=" + value + b" HTTP/1.1\r\nHost: " + value + b"\r\nUser-Agent: " + value + b"\r\n\r\n"
    conn.exchange(request, b.http_response(400, "Bad Request", b"bad request"))
    conn.close(C)


def _tls(cap: Capture, rng: random.Random, t: int, value: bytes) -> None:
    conn = TcpConn(cap, CLIENT, TLS_SERVER, rng.randrange(40000, 60000), 443, t=t, rtt=ms(25))
    conn.handshake()
    tls12_handshake(conn, rng, value, cert_sizes=(1200,))
    conn.send(C, b.alert(b.ALERT_WARNING, b.ALERT_CLOSE_NOTIFY), final_ack=False)
    conn.close(C)


@scenario(
    "hostile_strings.pcap",
    'Client 192.168.66.6. For each of <script>alert(1)</script>, "><img src=x onerror=alert(1)>, '
    '<a href="javascript:alert(3)">x</a>, {{7*7}}, a non-UTF-8 value with a NUL, and a 5000-byte '
    "<svg/onload=alert(5)> string: an HTTP GET to 203.0.113.66:80 with that value in the path, Host and "
    "User-Agent; a DNS A query via 192.168.66.53 whose first label(s) carry it (the long one split into "
    "63-byte labels, a ~5 KB name over the 255-byte limit in one jumbo UDP datagram), answered NOERROR; "
    "and a complete TLS 1.2 handshake with 203.0.113.67:443 whose SNI and certificate CN carry it. No "
    "failure of any kind: only the report's escaping is under test.",
)
def hostile_strings(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    t = BASE_NS
    for value in (*HOSTILE, LONG):
        labels = [*b.split_labels(value), b"example", b"com"]
        dns_exchange(cap, t, CLIENT, RESOLVER, labels, answers=[b.a_record("203.0.113.66")], latency=ms(3))
        _http(cap, rng, t + ms(10), value)
        _tls(cap, rng, t + ms(200), value)
        t += ms(600)
    return cap.pcap()
