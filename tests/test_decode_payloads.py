"""Hardened payload decoders: real byte strings, positive cases, hostile cases and a seeded mutation loop.

Every decoder promise under test: for any bytes, a value or `MalformedPacket` with a stable kind, never
another exception; attacker strings come out printable, single-line and bounded (but not HTML-escaped).
"""

from __future__ import annotations

import random
import struct
import time
from types import SimpleNamespace

import dpkt
import numpy as np
import pytest

from pcapsense.decode.dns import MAX_ANSWERS, DnsMessage, parse_dns
from pcapsense.decode.http import (
    HTTP_METHODS,
    METHOD_PREFIXES,
    HttpRequestStart,
    find_header_end,
    parse_http_request_start,
)
from pcapsense.decode.text import safe_text
from pcapsense.decode.tls import HRR_RANDOM, TlsEvent, looks_like_tls_record, parse_tls
from pcapsense.errors import MalformedPacket
from pcapsense.events import tls_record_start
from pcapsense.packetstreams import FRAME_HASH_BYTES, frame_hashes

# --------------------------------------------------------------------------------------------- helpers


def malformed_kind(parse, *args, **kwargs) -> str:
    """Run a parser that must reject its input; return the MalformedPacket kind."""
    with pytest.raises(MalformedPacket) as info:
        parse(*args, **kwargs)
    return info.value.kind


def dns_header(ident=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def dns_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


def vec(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + vec(2, data)


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + vec(3, body)


def record(content_type: int, data: bytes, version: int = 0x0303) -> bytes:
    return bytes([content_type]) + version.to_bytes(2, "big") + vec(2, data)


def client_hello(sni: bytes | None = b"example.com", alpn: tuple[bytes, ...] = (b"h2", b"http/1.1")) -> bytes:
    """A TLS 1.3-style ClientHello handshake message: SNI first, ALPN, supported_versions, padding."""
    extensions = b""
    if sni is not None:
        extensions += ext(0, vec(2, b"\x00" + vec(2, sni)))
    if alpn:
        extensions += ext(16, vec(2, b"".join(vec(1, name) for name in alpn)))
    extensions += ext(43, vec(1, b"\x03\x04\x03\x03")) + ext(21, bytes(200))
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + vec(1, bytes(32))
        + vec(2, b"\x13\x01\x13\x02\xc0\x2f")
        + vec(1, b"\x00")
        + vec(2, extensions)
    )
    return handshake(1, body)


def server_hello(random_bytes: bytes = bytes(range(32, 64)), selected: int | None = 0x0304) -> bytes:
    extensions = ext(43, selected.to_bytes(2, "big")) if selected else b""
    body = b"\x03\x03" + random_bytes + vec(1, bytes(32)) + b"\x13\x01\x00" + vec(2, extensions)
    return handshake(2, body)


def kinds(events: list[TlsEvent]) -> list[str]:
    return [event.kind for event in events]


# ------------------------------------------------------------------------------------------- safe_text


def test_safe_text_keeps_ordinary_text_including_unicode_and_markup():
    assert safe_text(b"www.example.com") == "www.example.com"
    assert safe_text("bücher.de") == "bücher.de"
    assert safe_text("Ünïcödé 日本".encode()) == "Ünïcödé 日本"
    # Not HTML escaping: the report does that for its own context.
    assert safe_text(b'<script>alert("x")</script>') == '<script>alert("x")</script>'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\x00b", "a\\x00b"),
        (b"line1\r\nline2", "line1\\x0d\\x0aline2"),
        (b"\x1b[31mred", "\\x1b[31mred"),
        (b"del\x7f", "del\\x7f"),
        ("nel\x85", "nel\\x85"),  # C1 control
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
        ("x\u2028y", "x\\u2028y"),  # line separator would break "single line"
        (b"\xff\xfe", "\\xff\\xfe"),  # invalid UTF-8
        (b"\xc3", "\\xc3"),  # truncated UTF-8 sequence
        (b"C:\\x41", "C:\\\\x41"),  # a literal backslash cannot fake an escape
    ],
)
def test_safe_text_escapes_invisible_and_invalid(raw, expected):
    out = safe_text(raw)
    assert out == expected
    assert out.isprintable()


def test_safe_text_truncates_with_visible_remainder():
    assert safe_text(b"a" * 300) == "a" * 256 + "…[+44 bytes]"
    assert safe_text("b" * 10, limit=4) == "bbbb…[+6 chars]"
    assert safe_text(b"abc", limit=3) == "abc"


def test_safe_text_truncation_does_not_split_a_utf8_character():
    # "é" is two bytes; cutting at 3 would split the second one, so it goes whole into the remainder.
    assert safe_text("aéé".encode(), limit=4) == "aé…[+2 bytes]"


def test_safe_text_cost_is_bounded_by_limit():
    huge = b"\x00" * 10_000_000
    started = time.perf_counter()
    out = safe_text(huge, limit=16)
    assert out == "\\x00" * 16 + f"…[+{len(huge) - 16} bytes]"
    assert time.perf_counter() - started < 1.0


# ------------------------------------------------------------------------------------------------- DNS


def test_dns_query():
    message = parse_dns(dns_header() + dns_name(b"www", b"example", b"com") + struct.pack("!HH", 28, 1))
    assert message == DnsMessage(
        id=0x1234,
        is_response=False,
        opcode=0,
        rcode=0,
        truncated=False,
        qname="www.example.com",
        qtype=28,
        qdcount=1,
        ancount=0,
        answers=(),
    )


def dpkt_response() -> bytes:
    """A compressed response built by dpkt: CNAME chain to one A and one AAAA."""
    response = dpkt.dns.DNS(
        id=7,
        op=0x8183,  # QR, RD, RA, NXDOMAIN
        qd=[dpkt.dns.DNS.Q(name="www.example.com", type=1)],
        an=[
            dpkt.dns.DNS.RR(name="www.example.com", type=5, cname="cdn.example.net"),
            dpkt.dns.DNS.RR(name="cdn.example.net", type=1, ip=bytes([93, 184, 216, 34])),
            dpkt.dns.DNS.RR(name="cdn.example.net", type=28, ip6=bytes.fromhex("20010db8" + "00" * 11 + "01")),
        ],
    )
    return bytes(response)


def test_dns_response_with_compression():
    message = parse_dns(dpkt_response())
    assert message.is_response and message.rcode == 3 and message.rcode_name == "NXDOMAIN"
    assert message.qname == "www.example.com" and message.qtype == 1 and message.ancount == 3
    assert message.answers == ("cdn.example.net", "93.184.216.34", "2001:db8::1")


def test_dns_over_tcp_length_prefix_and_partial_message():
    wire = dpkt_response()
    framed = struct.pack("!H", len(wire)) + wire
    assert parse_dns(framed, over_tcp=True).answers == parse_dns(wire).answers
    # A response continuing in the next segment keeps what this segment holds.
    assert parse_dns(framed[:-10], over_tcp=True).answers == ("cdn.example.net", "93.184.216.34")
    # Over UDP the same cut is a malformed message.
    assert malformed_kind(parse_dns, wire[:-10]) == "dns-truncated"


def test_dns_answers_are_capped():
    question = dns_name(b"many", b"example") + struct.pack("!HH", 1, 1)
    answers = b"".join(rr(pointer(12), 1, bytes([10, 0, 0, i])) for i in range(40))
    message = parse_dns(dns_header(flags=0x8180, an=40) + question + answers)
    assert message.ancount == 40
    assert len(message.answers) == MAX_ANSWERS and message.answers[-1] == "10.0.0.15"


def test_dns_no_question():
    message = parse_dns(dns_header(qd=0))
    assert message.qname == "" and message.qtype is None


def test_dns_non_utf8_label_is_escaped_not_raised():
    message = parse_dns(dns_header() + dns_name(b"caf\xe9", b"\x00\x1b", b"com") + b"\x00\x01\x00\x01")
    assert message.qname == "caf\\xe9.\\x00\\x1b.com"


def test_dns_dot_inside_label_cannot_pose_as_two_labels():
    message = parse_dns(dns_header() + dns_name(b"bank.com", b"evil") + b"\x00\x01\x00\x01")
    assert message.qname == "bank\\x2ecom.evil"


def test_dns_compression_pointer_to_itself():
    assert malformed_kind(parse_dns, dns_header() + pointer(12) + b"\x00\x01\x00\x01") == "dns-pointer-loop"


def test_dns_compression_loop_through_earlier_label():
    # Question name "a" then a pointer back to the start of the same name: a -> a -> a ...
    payload = dns_header() + b"\x01a" + pointer(12) + b"\x00\x01\x00\x01"
    assert malformed_kind(parse_dns, payload) == "dns-pointer-loop"


def test_dns_forward_pointer():
    payload = dns_header() + pointer(40) + b"\x00\x01\x00\x01" + bytes(40)
    assert malformed_kind(parse_dns, payload) == "dns-forward-pointer"


def test_dns_long_pointer_chain():
    # An unparsed TXT rdata holds 40 pointers, each to the previous one; a CNAME points at the last.
    root = 12 + 5 + 11  # header, root-name question, TXT fixed part: the rdata starts with a root label
    chain = b"\x00" + b"".join(pointer(root if i == 0 else root + 1 + 2 * (i - 1)) for i in range(40))
    cname = rr(b"\x00", 5, pointer(root + 1 + 2 * 39))
    payload = dns_header(an=2) + b"\x00\x00\x01\x00\x01" + rr(b"\x00", 16, chain) + cname
    assert malformed_kind(parse_dns, payload) == "dns-pointer-loop"


def test_dns_label_longer_than_63():
    payload = dns_header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    assert malformed_kind(parse_dns, payload) == "dns-label-too-long"


def test_dns_name_longer_than_255():
    payload = dns_header() + dns_name(*[b"x" * 60] * 5) + b"\x00\x01\x00\x01"
    assert malformed_kind(parse_dns, payload) == "dns-name-too-long"


def test_dns_name_too_long_only_after_expanding_a_pointer():
    question = dns_name(*[b"q" * 63] * 3) + b"\x00\x05\x00\x01"  # 193 bytes: fine on its own
    target = b"\x3f" + b"t" * 63 + pointer(12)  # 64 more bytes: 257 once expanded
    payload = dns_header(flags=0x8180, an=1) + question + rr(pointer(12), 5, target)
    assert malformed_kind(parse_dns, payload) == "dns-name-too-long"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x12\x34\x01",
        dns_header()[:11],
        dns_header() + b"\x03www",  # question name cut
        dns_header() + dns_name(b"www") + b"\x00\x01",  # qclass missing
        dns_header(an=1, qd=0) + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x01\x02",  # rdata cut
    ],
)
def test_dns_truncated(payload):
    assert malformed_kind(parse_dns, payload) == "dns-truncated"


def test_dns_bad_address_length():
    payload = dns_header(qd=0, an=1) + rr(b"\x00", 1, b"\x01\x02\x03\x04\x05")
    assert malformed_kind(parse_dns, payload) == "dns-bad-rdata"


def test_dns_name_at_the_255_byte_limit_seen_twice():
    longest = dns_name(*[b"x" * 63] * 3, b"y" * 61)
    too_long = dns_name(*[b"x" * 63] * 3, b"y" * 62)
    assert (len(longest), len(too_long)) == (255, 256)
    for _ in range(2):  # the second time, plain names are looked up by their wire bytes
        assert parse_dns(dns_header() + longest + b"\x00\x01\x00\x01").qname == ".".join(["x" * 63] * 3 + ["y" * 61])
        assert malformed_kind(parse_dns, dns_header() + too_long + b"\x00\x01\x00\x01") == "dns-name-too-long"


def test_dns_remembered_plain_name_never_stands_for_another_name():
    plain = dns_header() + dns_name(b"www", b"example", b"com") + b"\x00\x01\x00\x01"
    assert parse_dns(plain).qname == "www.example.com"
    # Same first label, then a pointer: expanded, not mistaken for the remembered name.
    question = dns_name(b"example", b"com") + b"\x00\x05\x00\x01"
    response = dns_header(flags=0x8180, an=1) + question + rr(pointer(12), 5, b"\x03www" + pointer(12))
    assert parse_dns(response).answers == ("www.example.com",)
    # A zero byte inside a label is not the end of the name.
    for _ in range(2):
        message = parse_dns(dns_header() + dns_name(b"a\x00b", b"com") + b"\x00\x01\x00\x01")
        assert message.qname == "a\\x00b.com"


def fnv1a_reference(frame: bytes) -> int:
    """FNV-1a over the first 64 bytes (zero-padded), xor the frame length, as a signed 64-bit value."""
    value = 0xCBF29CE484222325
    for byte in frame[:FRAME_HASH_BYTES].ljust(FRAME_HASH_BYTES, b"\x00"):
        value = ((value ^ byte) * 0x100000001B3) % 2**64
    value ^= len(frame)
    return value - 2**64 if value >= 2**63 else value


def test_frame_hashes_are_fnv1a_of_the_first_64_bytes_and_the_length():
    frames = [b"", b"\x01", bytes(range(42)), bytes(range(64)), bytes(range(100)), b"\xff" * 200]
    pk = SimpleNamespace(
        data=np.frombuffer(b"".join(frames), dtype=np.uint8),
        start=np.cumsum([0] + [len(frame) for frame in frames[:-1]]),
        caplen=np.array([len(frame) for frame in frames]),
    )
    for rows in ([0, 1, 2], [2], [1, 3, 4, 5], list(range(len(frames)))):  # shortest frame per set varies
        assert frame_hashes(pk, np.array(rows)).tolist() == [fnv1a_reference(frames[row]) for row in rows]


# ------------------------------------------------------------------------------------------------- TLS


def test_builder_client_hello_is_valid_for_dpkt():
    parsed = dpkt.ssl.TLSRecord(record(22, client_hello(), version=0x0301))
    hello = dpkt.ssl.TLSHandshake(parsed.data).data
    assert isinstance(hello, dpkt.ssl.TLSClientHello)
    assert [ext_type for ext_type, _ in hello.extensions] == [0, 16, 43, 21]


def test_tls_client_hello_sni_and_alpn():
    [event] = parse_tls(record(22, client_hello(), version=0x0301))
    assert event == TlsEvent("client_hello", 0x0303, sni="example.com", alpn=("h2", "http/1.1"))


def test_tls_client_hello_hostile_sni_is_safe_text():
    [event] = parse_tls(record(22, client_hello(sni=b"<img src=x>\n\xff" + "\u202e".encode())))
    assert event.sni == "<img src=x>\\x0a\\xff\\u202e"


def test_tls_client_hello_cut_in_half_is_still_a_client_hello():
    segment = record(22, client_hello())
    first_half = segment[: len(segment) // 2]  # ends in the padding extension; the rest comes next segment
    [event] = parse_tls(first_half)
    assert event == TlsEvent("client_hello", 0x0303, sni="example.com", alpn=("h2", "http/1.1"))


# Offset of the first extension in record(22, client_hello()): record and handshake headers, version,
# random, session id, cipher suites, compression methods, extensions length. The SNI extension is 20 bytes.
EXTENSIONS_AT = 5 + 4 + 2 + 32 + 33 + 8 + 2 + 2


@pytest.mark.parametrize(
    ("keep", "sni"),
    [
        (6, None),  # only the handshake type byte
        (9, None),  # handshake header, no body
        (50, None),  # before the extensions
        (EXTENSIONS_AT + 2 + 2 + 2 + 1 + 2 + 5, None),  # inside the server name
        (EXTENSIONS_AT + 20 + 5, "example.com"),  # SNI done, ALPN cut
    ],
)
def test_tls_client_hello_cut_anywhere(keep, sni):
    [event] = parse_tls(record(22, client_hello())[:keep])
    assert event.kind == "client_hello" and event.sni == sni and event.alpn == ()


def test_tls_client_hello_spanning_two_records_in_one_segment():
    message = client_hello()
    segment = record(22, message[:100]) + record(22, message[100:])
    assert parse_tls(segment) == [TlsEvent("client_hello", 0x0303, sni="example.com", alpn=("h2", "http/1.1"))]


def test_tls_fatal_handshake_failure_alert():
    [event] = parse_tls(b"\x15\x03\x03\x00\x02\x02\x28")
    assert (event.kind, event.alert_level, event.alert_description) == ("alert", 2, 40)
    assert event.alert_name == "handshake_failure"


def test_tls_encrypted_alert_has_no_fields():
    [event] = parse_tls(record(21, bytes(26)))
    assert event == TlsEvent("alert", 0x0303)


def test_tls_cut_record_header_still_yields_alert_kind():
    assert parse_tls(b"\x15\x03") == [TlsEvent("alert", None)]
    assert parse_tls(b"\x16\x03\x01") == []  # handshake type byte not reached


def test_tls13_server_hello_negotiated_version():
    [event] = parse_tls(record(22, server_hello()))
    assert event == TlsEvent("server_hello", 0x0304)


def test_tls_hello_retry_request():
    [event] = parse_tls(record(22, server_hello(random_bytes=HRR_RANDOM)))
    assert event.kind == "hello_retry_request" and event.version == 0x0304


def test_tls12_server_flight_then_cipher_change():
    certificate = handshake(11, vec(3, vec(3, b"\x30\x82" + bytes(100))))
    flight = record(22, server_hello(selected=None) + certificate + handshake(14, b""))
    finished = record(20, b"\x01") + record(22, bytes([0x4A]) + bytes(39))
    events = parse_tls(flight + finished + record(23, bytes(50)))
    assert kinds(events) == [
        "server_hello",
        "certificate",
        "server_hello_done",
        "change_cipher_spec",
        "finished_or_encrypted",
    ]
    assert events[0].version == 0x0303


def test_tls_encrypted_finished_without_visible_cipher_change():
    # Ciphertext whose first byte happens to be a client_hello type: the implausible header gives it away.
    events = parse_tls(record(22, b"\x01\xf3\x9a\x11" + bytes(36)))
    assert kinds(events) == ["finished_or_encrypted"]


def test_tls_application_data_yields_nothing():
    assert parse_tls(record(23, bytes(100)) + record(23, bytes(10))) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x02\x01\x00\x05",  # major version 2
        b"\x16\x03\x09\x00\x05",  # minor version 9
        b"\x16\x03\x03\xff\xff",  # 64 KiB record
        b"\x18\x03\x03\x00\x01\x00",  # heartbeat
        record(21, b"\x02\x28") + b"garbage!",
    ],
)
def test_tls_garbage(payload):
    assert malformed_kind(parse_tls, payload) == "tls-bad-record"


def test_tls_complete_hello_contradicting_its_lengths():
    body = b"\x03\x03" + bytes(32) + b"\x20" + bytes(10)  # session id claims 32 bytes, the message ends
    assert malformed_kind(parse_tls, record(22, handshake(1, body))) == "tls-bad-handshake"


def test_tls_record_start_sniffs_alert_and_handshake_records_of_version_3():
    heads = [-1, 0x16030100, 0x150303FF, 0x1603FFFF, 0x17030300, 0x14030300, 0x16020300, 0x16040300, 0x16, 0x1603]
    expected = [False, True, True, True, False, False, False, False, False, False]
    assert tls_record_start(np.array(heads, dtype=np.int64)).tolist() == expected


def test_looks_like_tls_record():
    assert looks_like_tls_record(record(22, client_hello(), version=0x0301))
    assert looks_like_tls_record(b"\x17\x03\x03\x40\x00")
    assert not looks_like_tls_record(b"\x16\x03\x01\x00")  # too short to judge
    assert not looks_like_tls_record(b"\x16\x03\x05\x00\x10")
    assert not looks_like_tls_record(b"\x19\x03\x03\x00\x10")
    assert not looks_like_tls_record(b"\x17\x03\x03\x50\x00")  # 20 KiB record
    assert not looks_like_tls_record(b"POST / HTTP/1.1")


# ------------------------------------------------------------------------------------------------ HTTP


def test_http_method_prefixes():
    assert METHOD_PREFIXES == (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")
    assert len(HTTP_METHODS) == len(METHOD_PREFIXES)


def test_http_request_start():
    payload = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\nxx"
    assert parse_http_request_start(payload) == HttpRequestStart(
        method="GET",
        target="/index.html",
        version="HTTP/1.1",
        host="example.com",
        user_agent="curl/8.5.0",
        headers_complete=True,
        header_bytes=len(payload) - 2,
    )


def test_http_hostile_header_values_are_safe_text_not_html_escaped():
    payload = (
        b"POST /x HTTP/1.0\r\nhost: <script>alert(1)</script>\r\n"
        b"USER-AGENT: Mozilla\x1b]0;pwned\x07 \xff\r\nHost: second\r\n\r\n"
    )
    start = parse_http_request_start(payload)
    assert start.host == "<script>alert(1)</script>"  # first Host wins, markup left for the report
    assert start.user_agent == "Mozilla\\x1b]0;pwned\\x07 \\xff"


def test_http_non_numeric_content_length_is_ignored():
    payload = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 12abc\r\nContent-Length: -1\r\n\r\n"
    assert parse_http_request_start(payload).headers_complete


def test_http_bare_lf_line_endings():
    start = parse_http_request_start(b"GET / HTTP/1.0\nHost: a\n\nbody")
    assert start.host == "a" and start.headers_complete and start.header_bytes == 24


def test_http_64k_header_line():
    user_agent = b"A" * 65536
    payload = b"GET / HTTP/1.1\r\nUser-Agent: " + user_agent + b"\r\nHost: late\r\n\r\n"
    start = parse_http_request_start(payload)
    assert start.headers_complete and start.header_bytes == len(payload)
    assert start.user_agent is None and start.host is None  # beyond the 64 KiB looked at
    short = parse_http_request_start(b"GET / HTTP/1.1\r\nUser-Agent: " + b"B" * 60000 + b"\r\n\r\n")
    assert short.user_agent == "B" * 256 + "…[+59744 bytes]"


def test_http_ten_thousand_headers():
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(10_000))
    started = time.perf_counter()
    late = parse_http_request_start(b"GET / HTTP/1.1\r\n" + headers + b"Host: late\r\n\r\n")
    early = parse_http_request_start(b"GET / HTTP/1.1\r\nHost: early\r\n" + headers + b"\r\n")
    assert time.perf_counter() - started < 1.0
    assert late.host is None and late.headers_complete  # only the first 100 lines are looked at
    assert early.host == "early"


def test_http_incomplete_request_line_is_tolerated():
    start = parse_http_request_start(b"GET /index.ht")
    assert (start.method, start.target, start.version) == ("GET", "/index.ht", None)
    assert not start.headers_complete and start.header_bytes == 13
    assert parse_http_request_start(b"PUT /a HTTP/1").version == "HTTP/1"
    assert parse_http_request_start(b"GET / HTTP/1.1\r").version == "HTTP/1.1"


def test_http_slowloris_trickle():
    payload = b"GET / HTTP/1.1\r\nHost: victim\r\nX-a: b\r\nX-Partial: val"
    start = parse_http_request_start(payload)
    assert start.host == "victim" and not start.headers_complete and start.header_bytes == len(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"GETX / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1 extra\r\n",
        b"GET / HTTP/11\r\n",
        b"GET / HTTPS/1.1",
        b"DELE",
        b"\x16\x03\x01\x02\x00",
    ],
)
def test_http_not_a_request(payload):
    assert malformed_kind(parse_http_request_start, payload) == "http-not-a-request"


def test_find_header_end_across_split():
    assert find_header_end(b"\r\n\r", b"\nbody") == 1
    assert find_header_end(b"\n", b"\r\nbody") == 2
    assert find_header_end(b"xyz", b"Host: a\r\n") == -1
    assert find_header_end(b"", b"") == -1


def test_find_header_end_every_split_point():
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY\r\n\r\n"
    blank_end = request.index(b"\r\n\r\n") + 4
    for cut in range(1, blank_end):
        first, second = request[:cut], request[cut:]
        assert find_header_end(first[-3:], second) == blank_end - cut, cut


# ------------------------------------------------------------------------------------ mutation property


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One random structural mutation of a valid payload, or fresh random bytes."""
    data = bytearray(seed)
    choice = rng.randrange(6)
    if choice == 0 or not data:
        return rng.randbytes(rng.randrange(300))
    if choice == 1:
        return bytes(data[: rng.randrange(len(data))])
    if choice == 2:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.choice((0x00, 0x3F, 0x40, 0xC0, 0xFF, rng.randrange(256)))
    elif choice == 3:
        pos = rng.randrange(len(data))
        data[pos:pos] = rng.randbytes(rng.randrange(1, 20))
    elif choice == 4:
        pos = rng.randrange(len(data))
        data[pos : pos + rng.randrange(1, 20)] = b""
    else:
        start = rng.randrange(len(data))
        data += data[start : start + rng.randrange(1, 64)]
    return bytes(data)


DNS_SEEDS = [
    dpkt_response(),
    dns_header() + dns_name(b"www", b"example", b"com") + b"\x00\x01\x00\x01",
]
TLS_SEEDS = [
    record(22, client_hello(), version=0x0301),
    record(22, server_hello()) + record(20, b"\x01") + record(23, bytes(30)),
    record(22, server_hello(selected=None) + handshake(11, vec(3, vec(3, bytes(40)))) + handshake(14, b"")),
    b"\x15\x03\x03\x00\x02\x02\x28",
]
HTTP_SEEDS = [
    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n\r\n",
    b"POST /api HTTP/1.0\nHost: a\nContent-Length: 3\n\nabc",
]


def fuzz_inputs(seeds: list[bytes], count: int = 2000) -> list[bytes]:
    rng = random.Random(1)
    return [mutate(rng, rng.choice(seeds)) for _ in range(count)]


def outcome(parse, payload: bytes, **kwargs) -> object:
    try:
        return parse(payload, **kwargs)
    except MalformedPacket as exc:
        assert exc.kind and exc.kind == exc.kind.lower() and " " not in exc.kind
        return exc


def test_property_dns_returns_message_or_malformed():
    for payload in fuzz_inputs(DNS_SEEDS):
        for over_tcp in (False, True):
            framed = struct.pack("!H", len(payload)) + payload if over_tcp else payload
            result = outcome(parse_dns, framed, over_tcp=over_tcp)
            assert isinstance(result, DnsMessage | MalformedPacket)
            if isinstance(result, DnsMessage):
                assert result.qname.isprintable() and all(a.isprintable() for a in result.answers)


def test_property_tls_returns_events_or_malformed():
    for payload in fuzz_inputs(TLS_SEEDS):
        result = outcome(parse_tls, payload)
        assert isinstance(result, list | MalformedPacket)
        if isinstance(result, list):
            assert all(isinstance(event, TlsEvent) for event in result)
            assert all(event.sni is None or event.sni.isprintable() for event in result)


def test_property_http_returns_start_or_malformed():
    for payload in fuzz_inputs(HTTP_SEEDS):
        result = outcome(parse_http_request_start, payload)
        assert isinstance(result, HttpRequestStart | MalformedPacket)
        if isinstance(result, HttpRequestStart):
            assert 0 < result.header_bytes <= len(payload)
        assert -1 <= find_header_end(payload[:3], payload[3:]) <= len(payload)


def test_property_safe_text_is_always_printable():
    for payload in fuzz_inputs(DNS_SEEDS + TLS_SEEDS + HTTP_SEEDS):
        assert safe_text(payload, limit=64).isprintable()
        text = payload[: len(payload) // 2 * 2].decode("utf-16-le", "surrogatepass")  # any code points
        assert safe_text(text, limit=64).isprintable()
