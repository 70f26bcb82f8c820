"""L3: path-MTU black holes, PMTUD that works (ICMP frag-needed / ICMPv6 Packet Too Big), and look-alikes.

All captures are taken next to the server (the sender of the large segments), because that is where a
black hole is visible: the full-size segment leaves, is retransmitted with RTO back-off, and no ACK for
it ever comes back while small segments are acknowledged. The path MTU beyond the router is 1400 (a
tunnel); both ends advertise MSS 1460 and use TCP timestamps, so a full-size segment carries 1448 bytes
in a 1500-byte IP packet with DF set.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, ms, sec, tls12_handshake, us
from sample_pcaps.writer import CaptureFile, PcapFile, Record

SERVER = host("10.1.0.10", 110)
ROUTER = host("10.1.0.1", 101)
TUNNEL_ROUTER = Host("10.255.0.1", ROUTER.mac, ttl=63)
CLIENT = Host("172.16.5.20", ROUTER.mac, ttl=58)
SERVER6 = Host("2001:db8:1::10", SERVER.mac)
ROUTER6 = Host("2001:db8:1::1", ROUTER.mac, ttl=64)
CLIENT6 = Host("2001:db8:99::20", ROUTER.mac, ttl=58)
RTT = ms(40)
RTO = ms(200)
CERT_CHAIN = (1400, 1100, 900)  # Certificate flight = 1448 + 1448 + a small tail


def _server_conn(
    cap: Capture, t: int, cport: int, sport: int, *, client: Host = CLIENT, server: Host = SERVER
) -> TcpConn:
    conn = TcpConn(cap, client, server, cport, sport, t=t, rtt=RTT, near_client=False)
    conn.handshake()
    return conn


def _small_page(cap: Capture, rng: random.Random, t: int) -> None:
    """'The login page works': a small HTTP exchange on the same path, every segment ACKed."""
    conn = _server_conn(cap, t, 50110, 80)
    conn.exchange(
        b.http_request("GET", "/login", b"portal.example.com", [(b"User-Agent", b"Mozilla/5.0")]),
        b.http_response(200, "OK", rng.randbytes(900), [(b"Content-Type", b"text/html")]),
    )
    conn.close(C)


def _rto_series(conn: TcpConn, seq: int, payload: bytes, first: int, count: int, *, delivered_last: bool) -> int:
    """Retransmit one segment `count` times with doubling RTO starting at `first + RTO`; returns last time."""
    t, rto = first, RTO
    for i in range(count):
        t += rto
        rto *= 2
        conn.emit(S, b.ACK | b.PSH, payload, seq=seq, at=t, lost=not (delivered_last and i == count - 1))
    return t


def _resend(conn: TcpConn, start: int, data: bytes, size: int, t: int) -> int:
    """Retransmit `data` (beginning at sequence `start`) in smaller segments, each ACKed by the client."""
    for offset in range(0, len(data), size):
        conn.emit(S, b.ACK, data[offset : offset + size], seq=start + offset, at=t)
        conn.emit(C, b.ACK, at=t + conn.delay(C))
        t += conn.wire_gap(size)
    return t + conn.delay(C)


def _stalled_tls(cap: Capture, rng: random.Random, t: int) -> tuple[TcpConn, list[tuple[int, bytes]], int]:
    """Handshake, small ClientHello, small ServerHello (ACKed), then the Certificate flight whose two
    full-size segments vanish while the small tail arrives (and is SACKed)."""
    conn = _server_conn(cap, t, 50123, 443)
    conn.send(C, b.client_hello(rng, b"portal.example.com"), final_ack=False)
    conn.send(S, b.tls_record(b.TLS_HANDSHAKE, b.server_hello(rng)), ack_every=1)
    flight = b.certificate(rng, b"portal.example.com", CERT_CHAIN) + b.server_key_exchange(rng) + b.server_hello_done()
    start = conn.t + conn.delay(S)
    sent = conn.send(S, b.tls_record(b.TLS_HANDSHAKE, flight), ack_every=0, lost=(0, 1))
    return conn, sent, start


@scenario(
    "pmtud_blackhole_tls.pcap",
    "Seed case, captured at server 10.1.0.10 (client 172.16.5.20 behind a 1400-MTU tunnel, MSS 1460 both "
    "ways, DF set, no ICMP anywhere). A small HTTP page on :80 works. On :443 the ClientHello and a small "
    "ServerHello segment are ACKed; the Certificate flight's first full-size segment (1500-byte IP) is "
    "retransmitted 5 times with RTO back-off 0.2/0.4/0.8/1.6/3.2 s and never ACKed; the small tail segment "
    "only gets duplicate ACKs with SACK.",
    fire=("pmtud-blackhole",),
    unsure=("tls-handshake-failure",),
)
def pmtud_blackhole_tls(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    _small_page(cap, rng, BASE_NS)
    conn, sent, start = _stalled_tls(cap, rng, BASE_NS + ms(400))
    seq, payload = sent[0]
    _rto_series(conn, seq, payload, start, 5, delivered_last=False)
    return cap.pcap()


@scenario(
    "pmtud_blackhole_fallback.pcap",
    "Same path as pmtud_blackhole_tls, but after 4 unanswered RTO retransmissions (0.2/0.4/0.8/1.6 s) of the "
    "full-size Certificate segment the server's black-hole detection lowers the segment size: the lost "
    "range is resent in 1240-byte segments that are ACKed, the handshake completes and a 20 KB response "
    "flows in 1240-byte segments.",
    fire=("pmtud-blackhole",),
)
def pmtud_blackhole_fallback(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    _small_page(cap, rng, BASE_NS)
    conn, sent, start = _stalled_tls(cap, rng, BASE_NS + ms(400))
    last = _rto_series(conn, sent[0][0], sent[0][1], start, 4, delivered_last=False)
    lost_range = sent[0][1] + sent[1][1]
    conn.t = _resend(conn, sent[0][0], lost_range, 1240, last + RTO * 16)
    conn.send(C, b.client_key_exchange(rng) + b.change_cipher_spec() + b.encrypted_handshake(rng), final_ack=False)
    conn.send(S, b.change_cipher_spec() + b.encrypted_handshake(rng))
    conn.send(C, b.application_data(rng, 420), final_ack=False)
    conn.send(S, b.application_data(rng, 20_000), seg=1240)
    conn.close(C)
    return cap.pcap()


def _icmp_answered(cap: Capture, rng: random.Random, conn: TcpConn, mtu: int, router: Host) -> None:
    """Two full-size segments hit the small link; the router reports the MTU for each (matching the
    flow's addresses, ports and sequence numbers); the server resends everything at the new size."""
    v6 = b.is_v6(router.ip)
    server = conn.src[S]
    payload_size = mtu - (40 if v6 else 20) - 20 - 12
    conn.send(C, b.http_request("GET", "/report.pdf", b"files.example.com"), final_ack=False)
    body = b.http_response(200, "OK", rng.randbytes(24_000), [(b"Content-Type", b"application/pdf")])
    size = conn.seg_size(S)
    head, start = body[: 2 * size], conn.snd[S]
    t = conn.t + conn.delay(S)
    for i in range(2):
        original = conn.emit(S, b.ACK, head[i * size : (i + 1) * size], at=t + conn.wire_gap(size) * i, lost=True)
        when = t + us(1500 + 40 * i)
        if v6:
            cap.ip(when, router, server, b.PROTO_ICMPV6, b.icmpv6_ptb(router.ip, server.ip, mtu, original))
        else:
            cap.ip(when, router, server, b.PROTO_ICMP, b.icmp_frag_needed(mtu, original), df=False)
    conn.t = _resend(conn, start, head, payload_size, t + us(1600))
    conn.send(S, body[len(head) :], seg=payload_size)
    conn.close(C)


@scenario(
    "pmtud_icmp_seen.pcap",
    "PMTUD working, captured at the server. IPv4 flow 172.16.5.20 -> 10.1.0.10:80: two full-size DF "
    "segments are answered by ICMP type 3 code 4 from 10.255.0.1 with next-hop MTU 1400, quoting the "
    "segment's IP header and first 8 TCP bytes; the server resends at 1348 bytes per segment and all is "
    "ACKed. IPv6 flow 2001:db8:99::20 -> 2001:db8:1::10:80: ICMPv6 Packet Too Big MTU 1280 from "
    "2001:db8:1::1 quoting the packet; segments drop to 1208 bytes. A black-hole verdict would be wrong; an "
    "informational 'path MTU = 1400/1280' note is right.",
    unsure=("pmtud-blackhole",),
)
def pmtud_icmp_seen(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    conn4 = _server_conn(cap, BASE_NS, 50200, 80)
    _icmp_answered(cap, rng, conn4, 1400, TUNNEL_ROUTER)
    conn6 = _server_conn(cap, BASE_NS + sec(1), 50300, 80, client=CLIENT6, server=SERVER6)
    _icmp_answered(cap, rng, conn6, 1280, ROUTER6)
    return cap.pcap()


@scenario(
    "pmtud_neg_loss_recovered.pcap",
    "Negative: 64 KB HTTP download from 10.1.0.10:80 to 172.16.5.20 (capture at server); one full-size "
    "segment is lost, three duplicate ACKs with SACK follow, it is fast-retransmitted once and ACKed; the "
    "transfer completes.",
)
def pmtud_neg_loss_recovered(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    conn = _server_conn(cap, BASE_NS, 50400, 80)
    conn.send(C, b.http_request("GET", "/big.bin", b"files.example.com"), final_ack=False)
    body = b.http_response(200, "OK", rng.randbytes(64_000), [(b"Content-Type", b"application/octet-stream")])
    lost_index, size = 11, conn.seg_size(S)
    cut = (lost_index + 4) * size
    sent = conn.send(S, body[:cut], lost=(lost_index,))
    t = conn.t + conn.delay(C) + conn.proc
    seq, chunk = sent[lost_index]
    conn.emit(S, b.ACK, chunk, seq=seq, at=t)
    conn.emit(C, b.ACK, at=t + conn.delay(C))
    conn.t = t
    conn.send(S, body[cut:])
    conn.close(C)
    return cap.pcap()


@scenario(
    "pmtud_neg_small_retrans.pcap",
    "Negative: lossy path, not an MTU problem. Small (<= 300-byte) responses from 10.1.0.10:8443 are "
    "retransmitted with RTO back-off (one three times, one once) before being ACKed; a later 30 KB "
    "transfer in full-size segments is ACKed normally.",
)
def pmtud_neg_small_retrans(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    conn = _server_conn(cap, BASE_NS, 50500, 8443)
    for losses in (0, 3, 0, 1, 0):
        conn.send(C, rng.randbytes(rng.randrange(80, 200)), final_ack=False)
        reply = rng.randbytes(rng.randrange(120, 300))
        if losses:
            start = conn.t + conn.delay(S)
            sent = conn.send(S, reply, ack_every=0, lost=(0,))
            conn.t = _rto_series(conn, *sent[0], start, losses, delivered_last=True)
            conn.emit(C, b.ACK, at=conn.t + conn.delay(C))
            conn.t += conn.delay(C)
        else:
            conn.send(S, reply)
        conn.idle(ms(300))
    conn.send(C, rng.randbytes(150), final_ack=False)
    conn.send(S, rng.randbytes(30_000))
    conn.close(C)
    return cap.pcap()


@scenario(
    "pmtud_neg_mirrored_dupes.pcap",
    "Negative: a SPAN port mirrors both directions, so every packet appears twice, the copy 5 us after the "
    "original. Underneath is a healthy TLS 1.2 session (172.16.5.20 -> 10.1.0.10:443) with full-size "
    "Certificate segments and a 40 KB response; nothing is really retransmitted.",
)
def pmtud_neg_mirrored_dupes(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    conn = _server_conn(cap, BASE_NS, 50600, 443)
    tls12_handshake(conn, rng, b"portal.example.com", cert_sizes=CERT_CHAIN)
    conn.exchange(b.application_data(rng, 380), b.application_data(rng, 40_000))
    conn.close(C)
    originals = cap.records()
    copies = [Record(r.ts_ns + us(5), r.data, r.iface) for r in originals]
    merged = sorted(originals + copies, key=lambda r: r.ts_ns)
    return PcapFile(b.DLT_EN10MB, merged)


@scenario(
    "tso_oversized.pcap",
    "Negative: captured on the sending server with TCP segmentation offload, so segments of 2896 to 64000 "
    "payload bytes (IP length up to 64052, far above the 1500 MTU and the peer's MSS 1460) appear; each is "
    "ACKed by 172.16.5.20. Not a black hole, not loss.",
)
def tso_oversized(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    conn = _server_conn(cap, BASE_NS, 50700, 80)
    conn.send(C, b.http_request("GET", "/video.mp4", b"media.example.com"), final_ack=False)
    for size in (1448, 2896, 4344, 8688, 14480, 28960, 64000, 43440, 2896):
        conn.send(S, rng.randbytes(size), seg=size, ack_every=1)
        conn.t += conn.delay(C)
    conn.close(C)
    return cap.pcap()
