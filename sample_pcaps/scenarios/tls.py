"""TLS handshake failures as seen on the wire, and healthy handshakes of every shape (1.2 full, 1.2
resumed, 1.3) so that "no Certificate visible" or "no Finished visible" is not mistaken for failure.
"""

from __future__ import annotations

import random

from sample_pcaps import build as b
from sample_pcaps.scenarios import scenario
from sample_pcaps.scenarios.common import BASE_NS, C, Capture, Host, S, TcpConn, host, ms, sec, tls12_handshake
from sample_pcaps.writer import CaptureFile

CLIENT = host("192.168.9.10", 910)
GATEWAY = host("192.168.9.1", 901)
RTT = ms(30)


def _server(last_octet: int, ttl: int = 52) -> Host:
    return Host(f"203.0.113.{last_octet}", GATEWAY.mac, ttl=ttl)


def _conn(cap: Capture, rng: random.Random, server: Host, t: int) -> TcpConn:
    conn = TcpConn(cap, CLIENT, server, rng.randrange(40000, 60000), 443, t=t, rtt=RTT)
    conn.handshake()
    return conn


def _finish(conn: TcpConn, rng: random.Random) -> None:
    """Application data both ways, close_notify both ways, FIN from the client."""
    conn.exchange(b.application_data(rng, 420), b.application_data(rng, 3100))
    conn.send(C, b.alert(b.ALERT_WARNING, b.ALERT_CLOSE_NOTIFY), final_ack=False)
    conn.send(S, b.alert(b.ALERT_WARNING, b.ALERT_CLOSE_NOTIFY), ack_every=0)
    conn.close(C)


@scenario(
    "tls_failure.pcap",
    "Client 192.168.9.10 to five servers on :443. 203.0.113.50 (SNI noreply.example.com): ClientHello is "
    "ACKed but no ServerHello ever comes; the client gives up after 10 s with FIN. 203.0.113.51 (SNI "
    "legacy.example.com): fatal handshake_failure(40) alert right after the ClientHello, then FIN. "
    "203.0.113.52 (SNI blocked.example.com): RST/ACK without options 2 ms after the ClientHello (RTT is "
    "30 ms) with TTL 62 while the server's SYN-ACK had TTL 52 (middlebox injection). 203.0.113.54 (SNI "
    "selfsigned.example.com): the client sends a fatal unknown_ca(48) alert after the Certificate. "
    "203.0.113.53 completes normally.",
    fire=("tls-handshake-failure",),
)
def tls_failure(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    silent = _conn(cap, rng, _server(50), BASE_NS)
    silent.send(C, b.client_hello(rng, b"noreply.example.com"), final_ack=False)
    silent.emit(S, b.ACK, at=silent.t + silent.delay(S) + ms(40))
    silent.t += sec(10)
    silent.close(C)

    refused = _conn(cap, rng, _server(51), BASE_NS + sec(1))
    refused.send(C, b.client_hello(rng, b"legacy.example.com"), final_ack=False)
    refused.send(S, b.alert(b.ALERT_FATAL, b.ALERT_HANDSHAKE_FAILURE), final_ack=False)
    refused.close(S)

    blocked = _conn(cap, rng, _server(52), BASE_NS + sec(2))
    blocked.send(C, b.client_hello(rng, b"blocked.example.com"), final_ack=False)
    server, (sport, cport) = blocked.src[S], blocked.ports[S]
    injected = b.tcp(server.ip, CLIENT.ip, sport, cport, blocked.snd[S], blocked.rcv[S], b.RST | b.ACK, window=0)
    cap.ip(blocked.t + ms(2), server, CLIENT, b.PROTO_TCP, injected, ttl=62)

    distrusted = _conn(cap, rng, _server(54), BASE_NS + sec(3))
    distrusted.send(C, b.client_hello(rng, b"selfsigned.example.com"), final_ack=False)
    flight = b.server_hello(rng) + b.certificate(rng, b"selfsigned.example.com", (900,)) + b.server_key_exchange(rng)
    distrusted.send(S, b.tls_record(b.TLS_HANDSHAKE, flight + b.server_hello_done()), final_ack=False)
    distrusted.send(C, b.alert(b.ALERT_FATAL, b.ALERT_UNKNOWN_CA), final_ack=False)
    distrusted.close(C)

    fine = _conn(cap, rng, _server(53), BASE_NS + sec(4))
    tls12_handshake(fine, rng, b"www.example.com")
    _finish(fine, rng)
    return cap.pcap()


def _tls13(conn: TcpConn, rng: random.Random, sni: bytes) -> None:
    """TLS 1.3: only ClientHello and ServerHello are readable; the rest is application_data records."""
    conn.send(C, b.client_hello(rng, sni), final_ack=False)
    server_flight = b.tls_record(b.TLS_HANDSHAKE, b.server_hello(rng, tls13=True)) + b.change_cipher_spec()
    conn.send(S, server_flight + b.application_data(rng, 2450))
    conn.send(C, b.change_cipher_spec() + b.application_data(rng, 53), final_ack=False)
    conn.send(S, b.application_data(rng, 230))


def _resumed(conn: TcpConn, rng: random.Random, sni: bytes, session: bytes) -> None:
    """Abbreviated TLS 1.2 handshake: the server echoes the session id; no Certificate is sent."""
    conn.send(C, b.client_hello(rng, sni, session_id=session), final_ack=False)
    hello = b.tls_record(b.TLS_HANDSHAKE, b.server_hello(rng, session_id=session))
    conn.send(S, hello + b.change_cipher_spec() + b.encrypted_handshake(rng))
    conn.send(C, b.change_cipher_spec() + b.encrypted_handshake(rng), final_ack=False)


@scenario(
    "tls_healthy.pcap",
    "Negative: client 192.168.9.10 completes a full TLS 1.2 handshake with 203.0.113.60 (www.example.com), a "
    "TLS 1.3 handshake with 203.0.113.61 (api.example.com; Certificate and Finished are encrypted), and a "
    "resumed TLS 1.2 session with 203.0.113.60 (no Certificate at all). Each exchanges application data and "
    "closes with close_notify and FIN.",
)
def tls_healthy(rng: random.Random) -> CaptureFile:
    cap = Capture(rng)
    full = _conn(cap, rng, _server(60), BASE_NS)
    tls12_handshake(full, rng, b"www.example.com")
    _finish(full, rng)
    modern = _conn(cap, rng, _server(61, ttl=49), BASE_NS + ms(600))
    _tls13(modern, rng, b"api.example.com")
    modern.exchange(b.application_data(rng, 500), b.application_data(rng, 5200))
    modern.send(C, b.application_data(rng, 19), final_ack=False)
    modern.close(C)
    resumed = _conn(cap, rng, _server(60), BASE_NS + sec(1.5))
    _resumed(resumed, rng, b"www.example.com", rng.randbytes(32))
    _finish(resumed, rng)
    return cap.pcap()
