"""Hardened DNS message decoder (RFC 1035 §4) for the few packets the core selects as DNS.

dpkt's decoder raises UnicodeDecodeError on non-UTF-8 labels and accepts names longer than 255 bytes, so
we decode names ourselves. Every way a message can be wrong ends in `MalformedPacket("dns-...")`; the
cost is linear in the message size: only the question and the first `MAX_ANSWERS` useful answers have
their (compressed) names expanded, every other record is merely skipped. Plain names and answer addresses
recur from message to message, so their text is kept in bounded caches keyed by their wire bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from functools import lru_cache
from typing import NamedTuple

from pcapsense.decode.text import safe_text
from pcapsense.errors import MalformedPacket

RCODE_NAMES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}

MAX_ANSWERS = 16
MAX_NAME_BYTES = 255  # RFC 1035 §2.3.4, wire length including length octets and the root label
MAX_POINTERS = 32  # real encoders chain a handful; this only stops pointer-to-pointer chains
PLAIN_NAME_CACHE = 4096  # distinct uncompressed names remembered (each at most 255 wire bytes)
ADDRESS_CACHE = 4096  # distinct answer addresses remembered

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_QUESTION_FIXED = 4  # qtype, qclass
_TCP_LENGTH_PREFIX = struct.Struct("!H")
_POINTER, _LABEL_TYPE_MASK = 0xC0, 0xC0
_ADDRESS_LENGTHS = {1: 4, 28: 16}  # A, AAAA
_NAME_RDATA_TYPES = frozenset({5, 12})  # CNAME, PTR


class DnsMessage(NamedTuple):
    """The fields the detectors need from one DNS message; strings are already `safe_text`.

    A named tuple rather than a frozen dataclass: it is as immutable, and building one costs a third of
    what the dataclass's per-field `object.__setattr__` did, which showed in parsing every DNS packet.
    """

    id: int
    is_response: bool
    opcode: int
    rcode: int
    truncated: bool
    qname: str
    qtype: int | None
    qdcount: int
    ancount: int
    answers: tuple[str, ...]

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, f"RCODE{self.rcode}")


def parse_dns(payload: bytes, *, over_tcp: bool = False) -> DnsMessage:
    """Decode one DNS message from a UDP payload, or from a TCP segment starting with its length prefix.

    Over TCP a large response may continue in later segments; the header and question must be present,
    and the answers are collected from whatever part of the answer section this segment holds.
    """
    message, complete = _unframe(bytes(payload), over_tcp)
    ident, flags, qdcount, ancount, _nscount, _arcount = _unpack(_HEADER, message, 0)
    qname, qtype, pos = _read_questions(message, _HEADER.size, qdcount)
    answers = _read_answers(message, pos, ancount, complete=complete) if ancount else ()
    return DnsMessage(
        ident, bool(flags & 0x8000), (flags >> 11) & 0xF, flags & 0xF, bool(flags & 0x0200), qname, qtype, qdcount,
        ancount, answers,
    )


def _unframe(payload: bytes, over_tcp: bool) -> tuple[bytes, bool]:
    """Return the DNS message bytes and whether the whole message is present."""
    if not over_tcp:
        return payload, True
    (length,) = _unpack(_TCP_LENGTH_PREFIX, payload, 0)
    end = _TCP_LENGTH_PREFIX.size + length
    return payload[_TCP_LENGTH_PREFIX.size : end], len(payload) >= end


def _need(message: bytes, pos: int, count: int) -> None:
    if pos + count > len(message):
        detail = f"need {count} bytes at offset {pos}, message has {len(message)}"
        raise MalformedPacket("dns-truncated", detail)


def _unpack(layout: struct.Struct, message: bytes, pos: int) -> tuple[int, ...]:
    _need(message, pos, layout.size)
    return layout.unpack_from(message, pos)


def _read_questions(message: bytes, pos: int, qdcount: int) -> tuple[str, int | None, int]:
    """Decode the first question, skip the others; return qname, qtype and the offset after them."""
    if not qdcount:
        return "", None, pos
    qname, pos = _name_at(message, pos)
    _need(message, pos, _QUESTION_FIXED)
    qtype = int.from_bytes(message[pos : pos + 2], "big")
    pos += _QUESTION_FIXED
    for _ in range(qdcount - 1):
        pos = _skip_name(message, pos)
        _need(message, pos, _QUESTION_FIXED)
        pos += _QUESTION_FIXED
    return qname, qtype, pos


def _read_answers(message: bytes, pos: int, ancount: int, *, complete: bool) -> tuple[str, ...]:
    """Collect A/AAAA/CNAME/PTR answers as text; a message continued in a later TCP segment ends early."""
    answers: list[str] = []
    try:
        for _ in range(ancount):
            pos = _skip_name(message, pos)
            rtype, _rclass, _ttl, rdlength = _unpack(_RR_FIXED, message, pos)
            start = pos + _RR_FIXED.size
            _need(message, start, rdlength)
            pos = start + rdlength
            if len(answers) < MAX_ANSWERS:
                text = _rdata_text(message, rtype, start, pos)
                if text is not None:
                    answers.append(text)
    except MalformedPacket as exc:
        if complete or exc.kind != "dns-truncated":
            raise
    return tuple(answers)


def _rdata_text(message: bytes, rtype: int, start: int, end: int) -> str | None:
    """Text for the answer types we report, None for the others."""
    if rtype in _ADDRESS_LENGTHS:
        if end - start != _ADDRESS_LENGTHS[rtype]:
            raise MalformedPacket("dns-bad-rdata", f"type {rtype} with {end - start} bytes of rdata")
        return _address_text(message[start:end])
    if rtype in _NAME_RDATA_TYPES:
        name, name_end = _name_at(message, start)
        if name_end > end:
            raise MalformedPacket("dns-bad-rdata", f"type {rtype} name runs past its rdata")
        return name
    return None


@lru_cache(maxsize=ADDRESS_CACHE)
def _address_text(rdata: bytes) -> str:
    """An A/AAAA answer as text, remembered: the same few addresses are answered again and again."""
    return str(ipaddress.ip_address(rdata))


def _name_at(message: bytes, start: int) -> tuple[str, int]:
    """Text of the name at `start` and the offset just after it.

    Most names are a plain run of labels ending at the first zero byte, and the same few names come back
    again and again (a response repeats its query's question), so those are looked up by their wire bytes;
    any other name is expanded by `_read_name`, which also raises the precise error for a bad one.
    """
    root = message.find(0, start, start + MAX_NAME_BYTES)
    if root >= 0:
        text = _plain_name_text(message[start : root + 1])
        if text is not None:
            return text, root + 1
    labels, end = _read_name(message, start)
    return _name_text(labels), end


@lru_cache(maxsize=PLAIN_NAME_CACHE)
def _plain_name_text(wire: bytes) -> str | None:
    """Text of `wire` if it is exactly labels of 1-63 bytes then the root label, else None."""
    labels: list[bytes] = []
    pos = 0
    while length := wire[pos]:
        if length & _LABEL_TYPE_MASK:
            return None
        pos += length + 1
        if pos >= len(wire):
            return None
        labels.append(wire[pos - length : pos])
    return _name_text(labels) if pos == len(wire) - 1 else None


def _read_name(message: bytes, start: int) -> tuple[list[bytes], int]:
    """Expand the possibly compressed name at `start`; return its labels and the offset just after it.

    Termination is guaranteed without a visited set: each pointer must jump strictly below the place
    the previous jump landed (the name's start for the first one), which is how every real encoder
    compresses, so the targets strictly decrease. `MAX_POINTERS` and `MAX_NAME_BYTES` bound the work.
    """
    labels: list[bytes] = []
    wire_length, pos, floor, pointers = 1, start, start, 0
    end_in_place: int | None = None
    while True:
        _need(message, pos, 1)
        length = message[pos]
        if length & _LABEL_TYPE_MASK == _POINTER:
            target = _pointer_target(message, pos, floor, pointers)
            end_in_place = pos + 2 if end_in_place is None else end_in_place
            pos = floor = target
            pointers += 1
            continue
        _check_label_length(length, pos)
        if length == 0:
            return labels, (pos + 1 if end_in_place is None else end_in_place)
        _need(message, pos + 1, length)
        wire_length += length + 1
        if wire_length > MAX_NAME_BYTES:
            detail = f"name at offset {start} exceeds {MAX_NAME_BYTES} bytes"
            raise MalformedPacket("dns-name-too-long", detail)
        labels.append(message[pos + 1 : pos + 1 + length])
        pos += length + 1


def _pointer_target(message: bytes, pos: int, floor: int, pointers: int) -> int:
    """Validate the compression pointer at `pos` and return where it points."""
    _need(message, pos, 2)
    target = int.from_bytes(message[pos : pos + 2], "big") & 0x3FFF
    if target > pos:
        raise MalformedPacket("dns-forward-pointer", f"pointer at offset {pos} points forward to {target}")
    if target >= floor:
        raise MalformedPacket("dns-pointer-loop", f"pointer at offset {pos} revisits offset {target}")
    if pointers >= MAX_POINTERS:
        raise MalformedPacket("dns-pointer-loop", f"more than {MAX_POINTERS} pointers in one name")
    return target


def _check_label_length(length: int, pos: int) -> None:
    """Lengths 64-191 are the obsolete extended/reserved label types (RFC 6891 §5), never valid."""
    if length & _LABEL_TYPE_MASK:
        raise MalformedPacket("dns-label-too-long", f"label length byte {length:#04x} at offset {pos}")


def _skip_name(message: bytes, pos: int) -> int:
    """Offset just after the name at `pos`, without following pointers (cheap, for unreported names)."""
    while True:
        _need(message, pos, 1)
        length = message[pos]
        if length & _LABEL_TYPE_MASK == _POINTER:
            _need(message, pos, 2)
            return pos + 2
        _check_label_length(length, pos)
        if length == 0:
            return pos + 1
        pos += length + 1


def _name_text(labels: list[bytes]) -> str:
    """Dotted text; a dot inside a label is escaped so `a.b` as one label cannot pose as two.

    Nearly every real name is printable ASCII without backslashes or dots inside labels, which `safe_text`
    returns unchanged: such names are joined and checked in one go, and only the others are escaped
    label by label.
    """
    joined = b".".join(labels)
    if joined.isascii():
        text = joined.decode("ascii")
        if text.isprintable() and "\\" not in text and text.count(".") == len(labels) - 1:
            return text
    return ".".join(safe_text(label, limit=MAX_NAME_BYTES).replace(".", "\\x2e") for label in labels)
