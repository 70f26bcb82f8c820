"""Packet builders: link layers, ARP, IPv4/IPv6, TCP/UDP/ICMP/ICMPv6, DNS, TLS records and HTTP/1 starts.

Everything is packed with `struct` so each field the detectors key on (DF bit, TTL, IP ID, TCP options,
ICMP next-hop MTU, DNS flags, TLS extensions) is set explicitly, checksums are right, and nothing depends on
a library's defaults changing between versions.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Iterable, Sequence

# Link types (LINKTYPE_* values as written in capture files).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_USER0 = 147
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8

BROADCAST = b"\xff" * 6

# Linux packet types, as used by SLL/SLL2 headers.
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OUTGOING = 4

ARPHRD_ETHER = 1

# Address families in DLT_NULL (macOS/Darwin values) and DLT_LOOP (OpenBSD values).
NULL_AF = {ETH_IPV4: 2, ETH_IPV6: 30}
LOOP_AF = {ETH_IPV4: 2, ETH_IPV6: 24}

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

ARP_REQUEST = 1
ARP_REPLY = 2


def mac(text: str) -> bytes:
    """Parse `aa:bb:cc:dd:ee:ff`."""
    return bytes.fromhex(text.replace(":", ""))


def addr(ip: str) -> bytes:
    """Packed IPv4 or IPv6 address."""
    return ipaddress.ip_address(ip).packed


def is_v6(ip: str) -> bool:
    return ":" in ip


def checksum(data: bytes) -> int:
    """Internet ones'-complement checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ----------------------------------------------------------------------------------------------- link layers


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet II frame; `tags` are (TPID, VID) pairs outermost first (0x88a8 then 0x8100 for QinQ)."""
    head = dst + src
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid & 0x0FFF)
    return head + struct.pack("!H", ethertype) + payload


def sll(pkttype: int, src: bytes, protocol: int, payload: bytes) -> bytes:
    """Linux cooked capture v1 (DLT 113): 16-byte header with the sender's MAC padded to 8 bytes."""
    return struct.pack("!HHH8sH", pkttype, ARPHRD_ETHER, len(src), src, protocol) + payload


def sll2(pkttype: int, src: bytes, protocol: int, payload: bytes, ifindex: int = 2) -> bytes:
    """Linux cooked capture v2 (DLT 276): 20-byte header, protocol first, with an interface index."""
    return struct.pack("!HHIHBB8s", protocol, 0, ifindex, ARPHRD_ETHER, pkttype, len(src), src) + payload


def null_header(ethertype: int, payload: bytes) -> bytes:
    """BSD loopback (DLT 0): the family is in the *capturing host's* byte order, little-endian here."""
    return struct.pack("<I", NULL_AF[ethertype]) + payload


def loop_header(ethertype: int, payload: bytes) -> bytes:
    """OpenBSD loopback (DLT 108): same idea as DLT_NULL but the family is always big-endian."""
    return struct.pack("!I", LOOP_AF[ethertype]) + payload


def pkttype_for(dst: bytes, src: bytes, local: bytes | None) -> int:
    """SLL packet type as the capturing host would have seen it."""
    if dst == BROADCAST:
        return PACKET_BROADCAST
    if dst[0] & 1:
        return PACKET_MULTICAST
    return PACKET_OUTGOING if src == local else PACKET_HOST


def encode_link(
    linktype: int,
    src: bytes,
    dst: bytes,
    ethertype: int,
    payload: bytes,
    *,
    tags: Sequence[tuple[int, int]] = (),
    local: bytes | None = None,
) -> bytes | None:
    """Wrap an L3 payload for `linktype`; None when that link cannot carry it (ARP on a raw-IP link)."""
    if linktype in (DLT_EN10MB, DLT_USER0):
        return ethernet(dst, src, ethertype, payload, tags)
    if linktype == DLT_LINUX_SLL:
        return sll(pkttype_for(dst, src, local), src, ethertype, payload)
    if linktype == DLT_LINUX_SLL2:
        return sll2(pkttype_for(dst, src, local), src, ethertype, payload)
    raw_ok = {DLT_RAW: (ETH_IPV4, ETH_IPV6), DLT_IPV4: (ETH_IPV4,), DLT_IPV6: (ETH_IPV6,)}
    if linktype in raw_ok:
        return payload if ethertype in raw_ok[linktype] else None
    if linktype == DLT_NULL:
        return null_header(ethertype, payload) if ethertype in NULL_AF else None
    if linktype == DLT_LOOP:
        return loop_header(ethertype, payload) if ethertype in LOOP_AF else None
    raise ValueError(f"no encoder for link type {linktype}")


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> bytes:
    """ARP for IPv4 over Ethernet (28 bytes)."""
    return struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op) + sha + addr(spa) + tha + addr(tpa)


# ----------------------------------------------------------------------------------------------------- IP


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 0, df: bool = True) -> bytes:
    """IPv4 header without options; DF set by default because TCP stacks set it for PMTUD."""
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000 if df else 0, ttl, proto, 0, addr(src), addr(dst)
    )
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, hlim: int = 64) -> bytes:
    """IPv6 header without extension headers."""
    return struct.pack("!IHBB", 0x60000000, len(payload), next_header, hlim) + addr(src) + addr(dst) + payload


def ip(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 0, df: bool = True) -> bytes:
    """IPv4 or IPv6 depending on the addresses; `ttl` is the hop limit for IPv6."""
    if is_v6(src):
        return ipv6(src, dst, proto, payload, hlim=ttl)
    return ipv4(src, dst, proto, payload, ttl=ttl, ident=ident, df=df)


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    if is_v6(src):
        return addr(src) + addr(dst) + struct.pack("!IxxxB", length, proto)
    return addr(src) + addr(dst) + struct.pack("!xBH", proto, length)


def _with_checksum(src: str, dst: str, proto: int, segment: bytes, offset: int) -> bytes:
    value = checksum(_pseudo(src, dst, proto, len(segment)) + segment)
    if proto == PROTO_UDP and value == 0:
        value = 0xFFFF
    return segment[:offset] + struct.pack("!H", value) + segment[offset + 2 :]


# ---------------------------------------------------------------------------------------------------- TCP


def tcp_syn_options(
    mss: int, *, wscale: int | None = 7, sack_ok: bool = True, ts: tuple[int, int] | None = None
) -> bytes:
    """SYN options in Linux order: MSS, SACK-permitted, timestamps, NOP, window scale."""
    out = struct.pack("!BBH", 2, 4, mss)
    if sack_ok and ts is not None:
        out += struct.pack("!BBBBII", 4, 2, 8, 10, *ts)
    elif sack_ok:
        out += b"\x01\x01\x04\x02"
    elif ts is not None:
        out += struct.pack("!BBBBII", 1, 1, 8, 10, *ts)
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    return out


def tcp_options(ts: tuple[int, int] | None = None, sack: Sequence[tuple[int, int]] = ()) -> bytes:
    """Options on established segments: NOP NOP TS, then NOP NOP SACK blocks."""
    out = struct.pack("!BBBBII", 1, 1, 8, 10, *ts) if ts is not None else b""
    if sack:
        out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(sack))
        out += b"".join(struct.pack("!II", left, right) for left, right in sack)
    return out


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    window: int = 502,
    options: bytes = b"",
) -> bytes:
    """TCP segment with a correct checksum; options are padded with EOL to a 4-byte boundary."""
    options += b"\0" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    head = struct.pack(
        "!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (offset << 12) | flags, window, 0, 0
    )
    return _with_checksum(src, dst, PROTO_TCP, head + options + payload, 16)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP datagram with a correct checksum."""
    segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _with_checksum(src, dst, PROTO_UDP, segment, 6)


# --------------------------------------------------------------------------------------------- ICMP/ICMPv6


def icmp(icmp_type: int, code: int, rest: bytes, payload: bytes = b"") -> bytes:
    """ICMPv4 message; `rest` is the 4-byte rest-of-header (id/seq, unused+MTU, ...)."""
    msg = struct.pack("!BBH", icmp_type, code, 0) + rest + payload
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def icmp_frag_needed(next_hop_mtu: int, original: bytes) -> bytes:
    """Type 3 code 4 with the next-hop MTU and the offending IP header plus its first 8 payload bytes."""
    ihl = (original[0] & 0x0F) * 4
    return icmp(3, 4, struct.pack("!HH", 0, next_hop_mtu), original[: ihl + 8])


def icmp_echo(request: bool, ident: int, seq: int, payload: bytes) -> bytes:
    return icmp(8 if request else 0, 0, struct.pack("!HH", ident, seq), payload)


def icmpv6(src: str, dst: str, icmp_type: int, code: int, body: bytes) -> bytes:
    """ICMPv6 message; the checksum covers the IPv6 pseudo-header."""
    msg = struct.pack("!BBH", icmp_type, code, 0) + body
    return _with_checksum(src, dst, PROTO_ICMPV6, msg, 2)


def solicited_node(target: str) -> str:
    """ff02::1:ffXX:XXXX multicast group that a neighbour solicitation for `target` is sent to."""
    low = addr(target)[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff02" + "0000" * 4 + "0001ff") + low))


def multicast_mac(group: str) -> bytes:
    """33:33:xx:xx:xx:xx Ethernet address for an IPv6 multicast group."""
    return b"\x33\x33" + addr(group)[-4:]


def icmpv6_ns(src: str, target: str, src_mac: bytes | None) -> bytes:
    """Neighbour solicitation (135); DAD probes come from :: and carry no source link-layer option."""
    dst = solicited_node(target)
    opt = b"" if src_mac is None else struct.pack("!BB", 1, 1) + src_mac
    return icmpv6(src, dst, 135, 0, b"\0\0\0\0" + addr(target) + opt)


def icmpv6_na(src: str, dst: str, target: str, target_mac: bytes) -> bytes:
    """Solicited neighbour advertisement (136) with Solicited+Override flags and the target MAC."""
    body = struct.pack("!I", 0x60000000) + addr(target) + struct.pack("!BB", 2, 1) + target_mac
    return icmpv6(src, dst, 136, 0, body)


def icmpv6_ptb(src: str, dst: str, mtu: int, original: bytes) -> bytes:
    """Packet Too Big (type 2) quoting as much of the invoking packet as fits in the 1280-byte minimum MTU."""
    room = 1280 - 40 - 8
    return icmpv6(src, dst, 2, 0, struct.pack("!I", mtu) + original[:room])


# ---------------------------------------------------------------------------------------- LAN broadcasts


def dhcp_discover(client_mac: bytes, xid: int) -> bytes:
    """BOOTP/DHCPDISCOVER payload (UDP 68 -> 67, sent to 255.255.255.255) with the broadcast flag."""
    fixed = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4)
    options = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x37\x04\x01\x03\x06\x0f" + b"\xff"
    return fixed + client_mac.ljust(16, b"\0") + b"\0" * 192 + options


def nbns_query(txid: int, name: str) -> bytes:
    """NetBIOS name query (UDP 137 broadcast) with the first-level encoded name."""
    raw = name.upper().ljust(15).encode() + b"\x00"
    encoded = bytes(c for byte in raw for c in (0x41 + (byte >> 4), 0x41 + (byte & 0x0F)))
    return struct.pack("!HHHHHH", txid, 0x0110, 1, 0, 0, 0) + b"\x20" + encoded + b"\0" + struct.pack("!HH", 0x20, 1)


# ---------------------------------------------------------------------------------------------------- DNS

QTYPE_A, QTYPE_CNAME, QTYPE_AAAA, QTYPE_TXT = 1, 5, 28, 16
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 2, 3, 5

DNS_QR, DNS_AA, DNS_TC, DNS_RD, DNS_RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080


def split_labels(text: bytes, size: int = 63) -> list[bytes]:
    """Cut an arbitrary string into DNS labels of at most 63 bytes (the wire limit per label)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [b""]


def dns_name(name: str | Sequence[bytes]) -> bytes:
    """Uncompressed wire name; a dotted string or an explicit label list (labels may contain dots)."""
    labels = [p.encode() for p in name.split(".") if p] if isinstance(name, str) else list(name)
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


DnsAnswer = tuple[int, bytes, bytes | None]  # (type, rdata, owner name in wire form or None = the question)


def dns_message(
    txid: int,
    flags: int,
    question: tuple[str | Sequence[bytes], int],
    answers: Iterable[DnsAnswer] = (),
    *,
    ttl: int = 300,
) -> bytes:
    """One-question DNS message; an answer without an owner points back at the question name (0xc00c)."""
    answers = list(answers)
    qname, qtype = question
    out = struct.pack("!HHHHHH", txid, flags, 1, len(answers), 0, 0) + dns_name(qname) + struct.pack("!HH", qtype, 1)
    for rtype, rdata, owner in answers:
        out += (b"\xc0\x0c" if owner is None else owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return out


def dns_query(txid: int, qname: str | Sequence[bytes], qtype: int = QTYPE_A) -> bytes:
    return dns_message(txid, DNS_RD, (qname, qtype))


def dns_response(
    txid: int,
    qname: str | Sequence[bytes],
    qtype: int = QTYPE_A,
    *,
    rcode: int = RCODE_NOERROR,
    answers: Iterable[DnsAnswer] = (),
    truncated: bool = False,
) -> bytes:
    flags = DNS_QR | DNS_RD | DNS_RA | rcode | (DNS_TC if truncated else 0)
    return dns_message(txid, flags, (qname, qtype), answers)


def a_record(ip4: str, owner: str | None = None) -> DnsAnswer:
    return QTYPE_A, addr(ip4), None if owner is None else dns_name(owner)


def aaaa_record(ip6: str, owner: str | None = None) -> DnsAnswer:
    return QTYPE_AAAA, addr(ip6), None if owner is None else dns_name(owner)


def cname_record(target: str) -> DnsAnswer:
    return QTYPE_CNAME, dns_name(target), None


def txt_record(text: bytes) -> DnsAnswer:
    """TXT rdata: the text cut into <=255-byte character strings."""
    return (
        QTYPE_TXT,
        b"".join(bytes([len(text[i : i + 255])]) + text[i : i + 255] for i in range(0, len(text), 255)),
        None,
    )


def dns_over_tcp(message: bytes) -> bytes:
    """DNS over TCP frames each message with a 2-byte length."""
    return struct.pack("!H", len(message)) + message


# ---------------------------------------------------------------------------------------------------- TLS

TLS_CHANGE_CIPHER_SPEC, TLS_ALERT, TLS_HANDSHAKE, TLS_APPLICATION_DATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE = 1, 2, 11
HS_SERVER_KEY_EXCHANGE, HS_SERVER_HELLO_DONE, HS_CLIENT_KEY_EXCHANGE = 12, 14, 16
ALERT_WARNING, ALERT_FATAL = 1, 2
ALERT_CLOSE_NOTIFY, ALERT_HANDSHAKE_FAILURE, ALERT_UNKNOWN_CA = 0, 40, 48

TLS12 = 0x0303
TLS_MAX_RECORD = 16384
EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN = 0, 10, 11, 13, 16
EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE, EXT_RENEGOTIATION_INFO = 43, 51, 0xFF01

CLIENT_SUITES = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0x009C, 0x002F)
SUITE_ECDHE_RSA_AES128_GCM = 0xC02F
SUITE_TLS13_AES128_GCM = 0x1301


def tls_record(content_type: int, body: bytes, version: int = TLS12) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    return struct.pack("!B", msg_type) + len(body).to_bytes(3, "big") + body


def _ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def _vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _vec16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def sni_extension(host: bytes) -> bytes:
    return _ext(EXT_SNI, _vec16(struct.pack("!BH", 0, len(host)) + host))


def alpn_extension(protocols: Sequence[bytes]) -> bytes:
    return _ext(EXT_ALPN, _vec16(b"".join(_vec8(p) for p in protocols)))


def client_hello(
    rng: random.Random, sni: bytes, alpn: Sequence[bytes] = (b"h2", b"http/1.1"), session_id: bytes | None = None
) -> bytes:
    """TLS ClientHello record (record version 0x0301 like real clients) with SNI and ALPN extensions."""
    exts = sni_extension(sni) + alpn_extension(alpn)
    exts += _ext(EXT_GROUPS, _vec16(struct.pack("!3H", 29, 23, 24)))
    exts += _ext(EXT_POINT_FORMATS, _vec8(b"\0"))
    exts += _ext(EXT_SIG_ALGS, _vec16(struct.pack("!4H", 0x0403, 0x0804, 0x0401, 0x0805)))
    exts += _ext(EXT_SUPPORTED_VERSIONS, _vec8(struct.pack("!2H", 0x0304, TLS12)))
    exts += _ext(EXT_KEY_SHARE, _vec16(struct.pack("!HH", 29, 32) + rng.randbytes(32)))
    suites = b"".join(struct.pack("!H", s) for s in CLIENT_SUITES)
    session = rng.randbytes(32) if session_id is None else session_id
    body = struct.pack("!H", TLS12) + rng.randbytes(32) + _vec8(session) + _vec16(suites)
    body += _vec8(b"\0") + _vec16(exts)
    return tls_record(TLS_HANDSHAKE, tls_handshake(HS_CLIENT_HELLO, body), version=0x0301)


def server_hello(
    rng: random.Random, alpn: bytes | None = b"http/1.1", tls13: bool = False, session_id: bytes | None = None
) -> bytes:
    """ServerHello handshake message (not yet in a record, so it can share one with Certificate); echoing
    the client's session id means an abbreviated (resumed) TLS 1.2 handshake."""
    if tls13:
        exts = _ext(EXT_SUPPORTED_VERSIONS, struct.pack("!H", 0x0304))
        exts += _ext(EXT_KEY_SHARE, struct.pack("!HH", 29, 32) + rng.randbytes(32))
        suite = SUITE_TLS13_AES128_GCM
    else:
        exts = _ext(EXT_RENEGOTIATION_INFO, b"\0") + _ext(EXT_POINT_FORMATS, _vec8(b"\0"))
        exts += alpn_extension([alpn]) if alpn else b""
        suite = SUITE_ECDHE_RSA_AES128_GCM
    session = rng.randbytes(32) if session_id is None else session_id
    body = struct.pack("!H", TLS12) + rng.randbytes(32) + _vec8(session) + struct.pack("!HB", suite, 0)
    return tls_handshake(HS_SERVER_HELLO, body + _vec16(exts))


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV with definite length."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


OID_SHA256_RSA = bytes.fromhex("2a864886f70d01010b")
OID_RSA = bytes.fromhex("2a864886f70d010101")
OID_COMMON_NAME = bytes.fromhex("550403")


def _der_name(common_name: bytes) -> bytes:
    attribute = _der(0x30, _der(0x06, OID_COMMON_NAME) + _der(0x0C, common_name))
    return _der(0x30, _der(0x31, attribute))


def x509_certificate(rng: random.Random, subject: bytes, issuer: bytes, size: int) -> bytes:
    """A structurally valid (unsigned, random-key) X.509 v3 certificate of roughly `size` bytes, so that
    dissectors parse it cleanly; the RSA modulus length absorbs the size."""
    algorithm = _der(0x30, _der(0x06, OID_SHA256_RSA) + _der(0x05, b""))
    validity = _der(0x30, _der(0x17, b"230101000000Z") + _der(0x17, b"251231235959Z"))
    modulus = (
        b"\x00" + bytes([0x80 | rng.randrange(0x80)]) + rng.randbytes(max(64, size - 420 - len(subject) - len(issuer)))
    )
    rsa_key = _der(0x30, _der(0x02, modulus) + _der(0x02, b"\x01\x00\x01"))
    spki = _der(0x30, _der(0x30, _der(0x06, OID_RSA) + _der(0x05, b"")) + _der(0x03, b"\0" + rsa_key))
    serial = _der(0x02, bytes([rng.randrange(1, 0x80)]) + rng.randbytes(15))
    version = _der(0xA0, _der(0x02, b"\x02"))
    tbs = _der(0x30, version + serial + algorithm + _der_name(issuer) + validity + _der_name(subject) + spki)
    return _der(0x30, tbs + algorithm + _der(0x03, b"\0" + rng.randbytes(256)))


def certificate(rng: random.Random, subject: bytes, sizes: Sequence[int] = (1650, 1180, 1020)) -> bytes:
    """Certificate handshake message with a leaf for `subject` and CA certificates; the default chain is
    big enough to need full-size segments."""
    names = [subject] + [f"Example CA {i}".encode() for i in range(1, len(sizes) + 1)]
    chain = [x509_certificate(rng, names[i], names[i + 1], size) for i, size in enumerate(sizes)]
    certs = b"".join(len(c).to_bytes(3, "big") + c for c in chain)
    return tls_handshake(HS_CERTIFICATE, len(certs).to_bytes(3, "big") + certs)


def server_key_exchange(rng: random.Random) -> bytes:
    params = struct.pack("!BHB", 3, 29, 32) + rng.randbytes(32)
    return tls_handshake(HS_SERVER_KEY_EXCHANGE, params + struct.pack("!HH", 0x0804, 256) + rng.randbytes(256))


def server_hello_done() -> bytes:
    return tls_handshake(HS_SERVER_HELLO_DONE, b"")


def client_key_exchange(rng: random.Random) -> bytes:
    return tls_record(TLS_HANDSHAKE, tls_handshake(HS_CLIENT_KEY_EXCHANGE, _vec8(rng.randbytes(32))))


def change_cipher_spec() -> bytes:
    return tls_record(TLS_CHANGE_CIPHER_SPEC, b"\x01")


def encrypted_handshake(rng: random.Random, size: int = 40) -> bytes:
    """An encrypted Finished: opaque bytes in a handshake record, as a passive observer sees it."""
    return tls_record(TLS_HANDSHAKE, rng.randbytes(size))


def application_data(rng: random.Random, size: int) -> bytes:
    """Encrypted application data in records of at most 16 KiB (the TLS plaintext limit)."""
    sizes = [min(TLS_MAX_RECORD, size - offset) for offset in range(0, size, TLS_MAX_RECORD)]
    return b"".join(tls_record(TLS_APPLICATION_DATA, rng.randbytes(n)) for n in sizes)


def alert(level: int, description: int) -> bytes:
    return tls_record(TLS_ALERT, bytes([level, description]))


# --------------------------------------------------------------------------------------------------- HTTP


def http_request(
    method: str, target: str, host: bytes, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
) -> bytes:
    """HTTP/1.1 request; header values are bytes so hostile strings pass through untouched."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + host]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def http_response(status: int, reason: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}".encode(), b"Content-Length: " + str(len(body)).encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
