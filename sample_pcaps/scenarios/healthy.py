"""The healthy baseline: every layer works, so every detector must stay silent on it."""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import SCENARIOS, scenario
from sample_pcaps.scenarios.common import (
    BASE_NS,
    C,
    Capture,
    Host,
    S,
    TcpConn,
    dns_exchange,
    host,
    ms,
    tls12_handshake,
    us,
)
from sample_pcaps.writer import CaptureFile

CLIENT = host("192.168.1.10", 11)
GATEWAY = host("192.168.1.1", 1)
RESOLVER = host("192.168.1.53", 53)
WEB = Host("203.0.113.80", GATEWAY.mac, ttl=54)
API = Host("198.51.100.43", GATEWAY.mac, ttl=50)


def _http(cap: Capture, t: int, rng: random.Random) -> None:
    conn = TcpConn(cap, CLIENT, WEB, 51234, 80, t=t, rtt=ms(24))
    conn.handshake()
    conn.exchange(
        b.http_request(
            "GET", "/index.html", b"www.example.com", [(b"User-Agent", b"Mozilla/5.0"), (b"Accept", b"*/*")]
        ),
        b.http_response(200, "OK", rng.randbytes(6000), [(b"Content-Type", b"text/html")]),
    )
    conn.idle(ms(35))
    conn.exchange(
        b.http_request("GET", "/style.css", b"www.example.com", [(b"User-Agent", b"Mozilla/5.0")]),
        b.http_response(200, "OK", rng.randbytes(1200), [(b"Content-Type", b"text/css")]),
    )
    conn.close(C)


def _tls(cap: Capture, t: int, rng: random.Random) -> None:
    conn = TcpConn(cap, CLIENT, API, 51240, 443, t=t, rtt=ms(31))
    conn.handshake()
    tls12_handshake(conn, rng, b"api.example.com")
    conn.exchange(b.application_data(rng, 350), b.application_data(rng, 4200))
    conn.send(C, b.alert(b.ALERT_WARNING, b.ALERT_CLOSE_NOTIFY), final_ack=False)
    conn.send(S, b.alert(b.ALERT_WARNING, b.ALERT_CLOSE_NOTIFY), ack_every=0)
    conn.close(C)


@scenario(
    "healthy.pcap",
    "Baseline on Ethernet: client 192.168.1.10 ARPs its gateway 192.168.1.1 (answered), pings it, resolves "
    "www/api.example.com via 192.168.1.53 in ~2 ms, fetches two objects over HTTP/1.1 keep-alive from "
    "203.0.113.80:80, runs a full TLS 1.2 handshake (SNI api.example.com, ALPN) with 198.51.100.43:443, "
    "exchanges application data, close_notify both ways, FIN closes. Nothing should fire.",
)
def healthy(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    t = BASE_NS
    cap.arp_request(t, CLIENT, GATEWAY.ip)
    cap.arp_reply(t + us(210), GATEWAY, CLIENT)
    ping = rng.randbytes(56)
    cap.ip(t + ms(1), CLIENT, GATEWAY, b.PROTO_ICMP, b.icmp_echo(True, 0x1F2E, 1, ping))
    cap.ip(t + ms(1) + us(340), GATEWAY, CLIENT, b.PROTO_ICMP, b.icmp_echo(False, 0x1F2E, 1, ping))
    t += ms(5)
    dns_exchange(cap, t, CLIENT, RESOLVER, "www.example.com", answers=[b.a_record(WEB.ip)], latency=us(1900))
    dns_exchange(cap, t + ms(3), CLIENT, RESOLVER, "api.example.com", answers=[b.a_record(API.ip)], latency=us(2300))
    dns_exchange(
        cap,
        t + ms(3) + us(40),
        CLIENT,
        RESOLVER,
        "api.example.com",
        qtype=b.QTYPE_AAAA,
        answers=[b.aaaa_record("2001:db8:443::43")],
        latency=us(2500),
    )
    _http(cap, t + ms(8), rng)
    _tls(cap, t + ms(12), rng)
    return cap.pcap()


@scenario("fmt_healthy.pcap.gz", "gzip (mtime 0) of exactly the bytes of healthy.pcap; a reader must inflate it.")
def healthy_gzip(_rng: random.Random) -> CaptureFile:
    return SCENARIOS["healthy.pcap"].capture()
