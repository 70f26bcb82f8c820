"""DNS failures (no answer after retries, SERVFAIL, REFUSED, NXDOMAIN burst, slow answer, truncation with
no TCP retry) and a healthy resolver whose traffic includes the benign versions of some of them.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, TcpConn, dns_exchange, host, jitter, ms, sec, us
from sample_pcaps.writer import CaptureFile

CLIENT = host("192.168.7.10", 710)
RESOLVER = host("192.168.7.53", 753)


def _retries(cap: Capture, rng: random.Random, t: int, qname: str, qtype: int, *, same_id: bool) -> None:
    """A query sent 4 times 1 s apart (original + 3 retries) that never gets any response."""
    sport, txid = rng.randrange(32768, 61000), rng.randrange(0x10000)
    for attempt in range(4):
        if not same_id:
            sport, txid = rng.randrange(32768, 61000), rng.randrange(0x10000)
        dns_exchange(
            cap,
            t + sec(attempt) + jitter(rng, 2000),
            CLIENT,
            RESOLVER,
            qname,
            qtype=qtype,
            latency=None,
            sport=sport,
            txid=txid,
        )


@scenario(
    "dns_failure.pcap",
    "Client 192.168.7.10, resolver 192.168.7.53. intranet.corp.example A sent 4 times 1 s apart (same id and "
    "port) and files.corp.example AAAA 4 times (new id/port each), never answered; broken.example.net "
    "SERVFAIL; internal.example.org REFUSED; 12 NXDOMAIN answers for different names within 1.5 s; "
    "slow.example.com answered after 1.5 s; big.example.com TXT answered with TC=1 and no TCP/53 retry. "
    "Two normal lookups bracket the failures.",
    fire=("dns-failure",),
)
def dns_failure(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    dns_exchange(
        cap, BASE_NS, CLIENT, RESOLVER, "www.example.com", answers=[b.a_record("93.184.216.34")], latency=ms(3)
    )
    _retries(cap, rng, BASE_NS + ms(500), "intranet.corp.example", b.QTYPE_A, same_id=True)
    _retries(cap, rng, BASE_NS + ms(700), "files.corp.example", b.QTYPE_AAAA, same_id=False)
    dns_exchange(cap, BASE_NS + sec(4), CLIENT, RESOLVER, "broken.example.net", rcode=b.RCODE_SERVFAIL, latency=ms(35))
    dns_exchange(
        cap, BASE_NS + sec(4.5), CLIENT, RESOLVER, "internal.example.org", rcode=b.RCODE_REFUSED, latency=ms(2)
    )
    for i in range(12):
        name = f"{rng.randbytes(5).hex()}.example-typo.com"
        dns_exchange(
            cap,
            BASE_NS + sec(5) + ms(125 * i),
            CLIENT,
            RESOLVER,
            name,
            rcode=b.RCODE_NXDOMAIN,
            latency=us(rng.randrange(3000, 8000)),
        )
    dns_exchange(
        cap,
        BASE_NS + sec(7),
        CLIENT,
        RESOLVER,
        "slow.example.com",
        answers=[b.a_record("198.51.100.7")],
        latency=ms(1500),
    )
    dns_exchange(
        cap, BASE_NS + sec(9), CLIENT, RESOLVER, "big.example.com", qtype=b.QTYPE_TXT, truncated=True, latency=ms(4)
    )
    dns_exchange(
        cap,
        BASE_NS + sec(10),
        CLIENT,
        RESOLVER,
        "www.example.org",
        answers=[b.a_record("93.184.216.35")],
        latency=ms(2),
    )
    return cap.pcap()


def _tcp_retry(cap: Capture, rng: random.Random, t: int, qname: str) -> None:
    """The correct reaction to TC=1: the same question over TCP/53, answered in full."""
    conn = TcpConn(cap, CLIENT, RESOLVER, rng.randrange(32768, 61000), 53, t=t, rtt=us(400))
    conn.handshake()
    txid = rng.randrange(0x10000)
    answer = b.dns_response(txid, qname, b.QTYPE_TXT, answers=[b.txt_record(rng.randbytes(1800).hex().encode()[:1800])])
    conn.exchange(b.dns_over_tcp(b.dns_query(txid, qname, b.QTYPE_TXT)), b.dns_over_tcp(answer))
    conn.close(C)


@scenario(
    "dns_healthy.pcap",
    "Negative: 30 lookups by 192.168.7.10 via 192.168.7.53 over 10 s (A, AAAA, CNAME chains), answered in "
    "1-30 ms; one search-suffix NXDOMAIN (www.example.com.corp.example) immediately followed by the "
    "successful absolute name; one TC=1 answer for big.example.com TXT followed by a successful retry over "
    "TCP/53.",
)
def dns_healthy(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    dns_exchange(cap, BASE_NS, CLIENT, RESOLVER, "www.example.com.corp.example", rcode=b.RCODE_NXDOMAIN, latency=ms(2))
    dns_exchange(
        cap, BASE_NS + ms(3), CLIENT, RESOLVER, "www.example.com", answers=[b.a_record("93.184.216.34")], latency=ms(2)
    )
    for i in range(28):
        t = BASE_NS + ms(300) + ms(340 * i) + jitter(rng, 50_000)
        name = f"svc{i}.example.net"
        if i % 4 == 1:
            edge = f"edge{i}.cdn.example"
            answers = [b.cname_record(edge), b.a_record(f"198.51.100.{100 + i}", owner=edge)]
            dns_exchange(cap, t, CLIENT, RESOLVER, name, answers=answers, latency=us(rng.randrange(1000, 30_000)))
        elif i % 4 == 2:
            dns_exchange(
                cap,
                t,
                CLIENT,
                RESOLVER,
                name,
                qtype=b.QTYPE_AAAA,
                answers=[b.aaaa_record(f"2001:db8:53::{i:x}")],
                latency=us(rng.randrange(1000, 30_000)),
            )
        else:
            dns_exchange(
                cap,
                t,
                CLIENT,
                RESOLVER,
                name,
                answers=[b.a_record(f"203.0.113.{100 + i}")],
                latency=us(rng.randrange(1000, 30_000)),
            )
    t = BASE_NS + sec(4.1)
    dns_exchange(cap, t, CLIENT, RESOLVER, "big.example.com", qtype=b.QTYPE_TXT, truncated=True, latency=ms(3))
    _tcp_retry(cap, rng, t + ms(4), "big.example.com")
    return cap.pcap()
