"""Hardened TLS record and handshake walker for the segments the core selects as TLS handshake/alert starts.

It reports what happened on the wire (hellos, alerts, cipher change), not the crypto: SNI and ALPN from the
ClientHello, the negotiated version and HelloRetryRequest from the ServerHello, alert level/description.
A segment rarely holds a whole flight, so a record or handshake message cut by the end of the segment
still yields its kind, with whatever fields were fully present. Work is linear in the payload size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pcapsense.decode.text import safe_text
from pcapsense.errors import MalformedPacket

# RFC 8446 §4.1.3: a HelloRetryRequest is a ServerHello whose random is this constant.
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

# IANA TLS Alert registry, including the deprecated codes old stacks still send.
ALERT_NAMES: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    52: "too_many_cids_requested",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
    121: "ech_required",
}

MAX_RECORD_LENGTH = 2**14 + 2048  # TLSCiphertext limit (RFC 5246 §6.2.3)
MAX_ALPN = 16
_MAX_PLAIN_MESSAGE = 2**16  # plaintext handshake messages other than Certificate are far smaller

_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE, _APPLICATION_DATA = 20, 21, 22, 23
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
_RANDOM = 32
_ALERT_LENGTH = 2
_EXT_SERVER_NAME, _EXT_ALPN, _EXT_SUPPORTED_VERSIONS = 0, 16, 43
_HOST_NAME = 0
_OPAQUE_KIND = "finished_or_encrypted"  # a handshake record we cannot read: Finished or other ciphertext
# Completes a partial record header with valid bytes so the present bytes can be checked alone.
_VALID_HEADER = bytes([_HANDSHAKE, 3, 3, 0, 0])


@dataclass(frozen=True, slots=True)
class TlsEvent:
    """One thing seen in a TLS segment. `version` is the negotiated version for a ServerHello (from
    supported_versions when present), the legacy_version of a ClientHello, else the record version;
    None only when the record header itself was cut before its version."""

    kind: str
    version: int | None
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    alert_level: int | None = None
    alert_description: int | None = None
    alert_name: str | None = None


def looks_like_tls_record(payload: bytes) -> bool:
    """Cheap sniff: a full record header with content type 20-23, version 3.0-3.4 and a sane length."""
    return len(payload) >= _RECORD_HEADER and _header_ok(bytes(payload[:_RECORD_HEADER]))


def _header_ok(header: bytes) -> bool:
    """Check the fields present in a possibly partial record header."""
    full = header + _VALID_HEADER[len(header) :]
    return (
        _CHANGE_CIPHER_SPEC <= full[0] <= _APPLICATION_DATA
        and full[1] == 3
        and full[2] <= 4
        and int.from_bytes(full[3:5], "big") <= MAX_RECORD_LENGTH
    )


def parse_tls(payload: bytes) -> list[TlsEvent]:
    """Walk the TLS records in one TCP segment payload, which must start at a record boundary.

    Raises MalformedPacket("tls-bad-record") when a record header is not TLS, and
    MalformedPacket("tls-bad-handshake") when a complete hello contradicts its own length fields.
    """
    data = bytes(payload)
    walk = _Walk()
    pos = 0
    while pos < len(data):
        header = data[pos : pos + _RECORD_HEADER]
        if not _header_ok(header):
            raise MalformedPacket("tls-bad-record", f"no TLS record header at offset {pos}")
        length = int.from_bytes(header[3:5], "big") if len(header) == _RECORD_HEADER else 0
        fragment = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        record = _Record(
            content_type=header[0],
            version=int.from_bytes(header[1:3], "big") if len(header) >= 3 else None,
            fragment=fragment,
            complete=len(header) == _RECORD_HEADER and len(fragment) == length,
        )
        if record.content_type != _HANDSHAKE:
            walk.flush()
        _RECORD_HANDLERS[record.content_type](walk, record)
        pos += _RECORD_HEADER + length
    walk.flush()
    return walk.events


@dataclass(frozen=True, slots=True)
class _Record:
    content_type: int
    version: int | None
    fragment: bytes
    complete: bool


@dataclass(slots=True)
class _Walk:
    """State across the records of one segment: events so far, handshake bytes awaiting a complete
    message (messages may span records), and whether a cipher change made handshake records opaque."""

    events: list[TlsEvent] = field(default_factory=list)
    pending: bytearray = field(default_factory=bytearray)
    version: int | None = None
    encrypted: bool = False

    def flush(self) -> None:
        """Report a handshake message cut short (by the segment's end or a foreign record)."""
        if self.pending:
            self.events.append(_message_event(self.pending, self.version, cut=True))
            self.pending.clear()


def _on_change_cipher_spec(walk: _Walk, record: _Record) -> None:
    walk.events.append(TlsEvent("change_cipher_spec", record.version))
    walk.encrypted = True


def _on_alert(walk: _Walk, record: _Record) -> None:
    """A plaintext alert is exactly two bytes; a longer one is encrypted and only its presence is known."""
    plaintext = record.complete and len(record.fragment) == _ALERT_LENGTH
    level, description = record.fragment if plaintext else (None, None)
    name = ALERT_NAMES.get(description) if description is not None else None
    walk.events.append(
        TlsEvent("alert", record.version, alert_level=level, alert_description=description, alert_name=name)
    )


def _on_handshake(walk: _Walk, record: _Record) -> None:
    if walk.encrypted:
        walk.events.append(TlsEvent(_OPAQUE_KIND, record.version))
        return
    if not walk.pending:
        walk.version = record.version
    walk.pending += record.fragment
    _drain(walk)


def _on_application_data(walk: _Walk, record: _Record) -> None:
    """Application data carries nothing we can read."""


_RECORD_HANDLERS: dict[int, Callable[[_Walk, _Record], None]] = {
    _CHANGE_CIPHER_SPEC: _on_change_cipher_spec,
    _ALERT: _on_alert,
    _HANDSHAKE: _on_handshake,
    _APPLICATION_DATA: _on_application_data,
}


def _drain(walk: _Walk) -> None:
    """Emit every complete handshake message in `walk.pending`, leaving a partial one in place.

    A header that cannot start a plaintext message means we are looking at ciphertext (e.g. a Finished
    whose ChangeCipherSpec was in an earlier segment): report it once and treat the rest as opaque.
    """
    pending = walk.pending
    while len(pending) >= _HANDSHAKE_HEADER:
        msg_type, length = pending[0], int.from_bytes(pending[1:4], "big")
        if not _plausible(msg_type, length, bytes(pending[4:7])):
            walk.events.append(TlsEvent(_OPAQUE_KIND, walk.version))
            walk.encrypted = True
            pending.clear()
            return
        end = _HANDSHAKE_HEADER + length
        if len(pending) < end:
            return
        walk.events.append(_message_event(pending[:end], walk.version, cut=False))
        del pending[:end]  # O(1): CPython bytearrays delete from the front by moving their start


# Checks that a handshake header (type, length, first body bytes) is plausible plaintext.
def _hello_ok(length: int, head: bytes) -> bool:
    return 38 <= length <= _MAX_PLAIN_MESSAGE and (len(head) < 2 or (head[0] == 3 and head[1] <= 4))


def _certificate_ok(length: int, head: bytes) -> bool:
    return length >= 3 and (len(head) < 3 or int.from_bytes(head[:3], "big") + 3 == length)


def _empty_ok(length: int, head: bytes) -> bool:
    return length == 0


def _bounded_ok(length: int, head: bytes) -> bool:
    return length <= _MAX_PLAIN_MESSAGE


# Handshake types that travel in plaintext over TLS/TCP: kind reported and plausibility check.
# Anything else (Finished, TLS 1.3-only types, unknown numbers) can only be ciphertext.
_HANDSHAKE_TYPES: dict[int, tuple[str, Callable[[int, bytes], bool]]] = {
    0: ("other_handshake", _empty_ok),  # hello_request
    1: ("client_hello", _hello_ok),
    2: ("server_hello", _hello_ok),
    4: ("other_handshake", _bounded_ok),  # new_session_ticket (TLS 1.2)
    11: ("certificate", _certificate_ok),
    12: ("other_handshake", _bounded_ok),  # server_key_exchange
    13: ("other_handshake", _bounded_ok),  # certificate_request
    14: ("server_hello_done", _empty_ok),
    15: ("other_handshake", _bounded_ok),  # certificate_verify
    16: ("other_handshake", _bounded_ok),  # client_key_exchange
    21: ("other_handshake", _bounded_ok),  # certificate_url
    22: ("other_handshake", _bounded_ok),  # certificate_status
    23: ("other_handshake", _bounded_ok),  # supplemental_data
}


def _plausible(msg_type: int, length: int, head: bytes) -> bool:
    entry = _HANDSHAKE_TYPES.get(msg_type)
    return entry is not None and entry[1](length, head)


def _message_event(message: bytes | bytearray, version: int | None, *, cut: bool) -> TlsEvent:
    """Event for one handshake message (header + body, possibly cut anywhere after the type byte)."""
    entry = _HANDSHAKE_TYPES.get(message[0])
    kind = entry[0] if entry else _OPAQUE_KIND
    parse_body = _BODY_PARSERS.get(kind)
    if parse_body is None:
        return TlsEvent(kind, version)
    hello = _Hello(kind, version)
    with _reading(cut, kind):
        parse_body(_Cursor(bytes(message[_HANDSHAKE_HEADER:])), hello, cut)
    return TlsEvent(hello.kind, hello.version, sni=hello.sni, alpn=hello.alpn)


@dataclass(slots=True)
class _Hello:
    """Fields of a hello, filled in as parsing gets to them so a cut message keeps what was reached."""

    kind: str
    version: int | None
    sni: str | None = None
    alpn: tuple[str, ...] = ()


class _Short(Exception):
    """A read ran past the available bytes (internal signal, never leaves this module)."""


@contextmanager
def _reading(cut: bool, what: str) -> Iterator[None]:
    """Running short is expected in a message cut by the segment's end, and malformed otherwise."""
    try:
        yield
    except _Short:
        if not cut:
            raise MalformedPacket("tls-bad-handshake", f"{what} shorter than its length fields") from None


class _Cursor:
    """Bounds-checked reader over TLS's length-prefixed vectors (RFC 8446 §3.4)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise _Short
        self.pos += count
        return self.data[self.pos - count : self.pos]

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def vector(self, width: int, *, allow_cut: bool = False) -> _Cursor:
        """The vector with a `width`-byte length prefix; `allow_cut` accepts a vector the segment cut."""
        count = self.uint(width)
        return _Cursor(self.take(min(count, self.remaining) if allow_cut else count))


def _extensions(cursor: _Cursor, cut: bool) -> Iterator[tuple[int, _Cursor]]:
    """(type, data) for each extension; hellos without an extensions block have none."""
    if not cursor.remaining:
        return
    block = cursor.vector(2, allow_cut=cut)
    while block.remaining:
        ext_type = block.uint(2)
        yield ext_type, block.vector(2)


def _parse_client_hello(cursor: _Cursor, hello: _Hello, cut: bool) -> None:
    hello.version = cursor.uint(2)
    cursor.take(_RANDOM)
    cursor.vector(1)  # session id
    cursor.vector(2)  # cipher suites
    cursor.vector(1)  # compression methods
    for ext_type, ext in _extensions(cursor, cut):
        if ext_type == _EXT_SERVER_NAME and hello.sni is None:
            hello.sni = _server_name(ext)
        elif ext_type == _EXT_ALPN and not hello.alpn:
            hello.alpn = _alpn(ext)


def _server_name(ext: _Cursor) -> str | None:
    """First host_name entry of the server_name extension (RFC 6066 §3)."""
    names = ext.vector(2)
    while names.remaining:
        name_type = names.uint(1)
        name = names.vector(2)
        if name_type == _HOST_NAME:
            return safe_text(name.data)
    return None


def _alpn(ext: _Cursor) -> tuple[str, ...]:
    """Offered protocol names (RFC 7301 §3.1), at most MAX_ALPN."""
    protocols = ext.vector(2)
    names: list[str] = []
    while protocols.remaining and len(names) < MAX_ALPN:
        names.append(safe_text(protocols.vector(1).data))
    return tuple(names)


def _parse_server_hello(cursor: _Cursor, hello: _Hello, cut: bool) -> None:
    hello.version = cursor.uint(2)
    if cursor.take(_RANDOM) == HRR_RANDOM:
        hello.kind = "hello_retry_request"
    cursor.vector(1)  # session id
    cursor.take(3)  # cipher suite, compression method
    for ext_type, ext in _extensions(cursor, cut):
        if ext_type == _EXT_SUPPORTED_VERSIONS:
            hello.version = ext.uint(2)


_BODY_PARSERS: dict[str, Callable[[_Cursor, _Hello, bool], None]] = {
    "client_hello": _parse_client_hello,
    "server_hello": _parse_server_hello,
}
