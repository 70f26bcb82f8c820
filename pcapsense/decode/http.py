"""Hardened HTTP/1.x request-start decoder for the segments the core selects as request starts.

dpkt's `http.Request` needs the whole message (NeedData otherwise) and raises ValueError on a bad
Content-Length; we only need the request line, Host, User-Agent and whether the header block has ended
(slowloris trickles it), so we read just that, with bounded work: the blank-line search is a C-level
scan, and at most `MAX_HEADER_LINES` lines within `MAX_HEADER_SCAN` bytes are looked at in Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pcapsense.decode.text import safe_text
from pcapsense.errors import MalformedPacket

HTTP_METHODS: tuple[str, ...] = (
    "GET",
    "POST",
    "HEAD",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "CONNECT",
    "TRACE",
)
# First four bytes of each method followed by its space: fixed-width keys for a vectorised sniff.
METHOD_PREFIXES: tuple[bytes, ...] = tuple(f"{method} "[:4].encode("ascii") for method in HTTP_METHODS)

MAX_HEADER_LINES = 100
MAX_HEADER_SCAN = 64 * 1024

_METHODS = frozenset(method.encode("ascii") for method in HTTP_METHODS)
_VERSION = re.compile(rb"HTTP/\d\.\d")
_SAMPLE_VERSION = b"HTTP/1.1"  # completes a cut version so the present bytes can be checked alone
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_TAIL = 3  # longest proper prefix of the blank line "\r\n\r\n"
_WANTED_HEADERS = {b"host": "host", b"user-agent": "user_agent"}


@dataclass(frozen=True, slots=True)
class HttpRequestStart:
    """Request line and the headers the detectors use; strings are `safe_text`, None when absent."""

    method: str
    target: str | None
    version: str | None
    host: str | None
    user_agent: str | None
    headers_complete: bool
    header_bytes: int


def parse_http_request_start(payload: bytes) -> HttpRequestStart:
    """Decode the start of an HTTP/1.x request.

    The request line must be ``METHOD SP target SP HTTP/x.y``; if the segment ends inside it, what is
    present must be a prefix of such a line. Anything else raises MalformedPacket("http-not-a-request").
    """
    data = bytes(payload)
    line_end = data.find(b"\n")
    line = (data if line_end < 0 else data[:line_end]).removesuffix(b"\r")
    method, target, version = _request_line(line, complete=line_end >= 0)
    header_end = _blank_line_end(data)
    block_end = header_end if header_end >= 0 else len(data)
    fields = _header_fields(data[line_end + 1 : block_end]) if line_end >= 0 else {}
    return HttpRequestStart(
        method=method,
        target=target,
        version=version,
        host=fields.get("host"),
        user_agent=fields.get("user_agent"),
        headers_complete=header_end >= 0,
        header_bytes=header_end if header_end >= 0 else len(data),
    )


def find_header_end(tail: bytes, payload: bytes) -> int:
    """Index in `payload` just past the blank line ending a header block, or -1.

    `tail` is the last (up to 3) bytes of the same request's earlier segments, so a blank line split as
    ``"\\r\\n\\r" + "\\n"`` is found. A blank line already complete within `tail` gives 0.
    """
    tail = bytes(tail[-_TAIL:])
    end = _blank_line_end(tail + bytes(payload))
    return max(end - len(tail), 0) if end >= 0 else -1


def _blank_line_end(data: bytes) -> int:
    """Offset just past the first blank line (CRLF CRLF, tolerating bare LF), or -1."""
    match = _BLANK_LINE.search(data)
    return match.end() if match else -1


def _request_line(line: bytes, *, complete: bool) -> tuple[str, str | None, str | None]:
    """Validate the request line (or the prefix of it the segment holds) and return its three parts."""
    parts = line.split(b" ", 2)
    parts += [None] * (3 - len(parts))
    method, target, version = parts
    if not _request_line_ok(method, target, version, complete):
        raise MalformedPacket("http-not-a-request", f"bad request line {safe_text(line, 64)!r}")
    return (
        safe_text(method),
        safe_text(target) if target else None,
        safe_text(version) if version else None,
    )


def _request_line_ok(method: bytes, target: bytes | None, version: bytes | None, complete: bool) -> bool:
    """A complete line needs all three parts; a cut one may stop anywhere after the method."""
    if method not in _METHODS:
        return False
    if version is None:
        return not complete
    return bool(target) and _version_ok(version, complete)


def _version_ok(version: bytes, complete: bool) -> bool:
    """``HTTP/x.y``, or a prefix of it when cut: completed from a sample version, then checked."""
    if not complete and len(version) <= len(_SAMPLE_VERSION):
        version += _SAMPLE_VERSION[len(version) :]
    return _VERSION.fullmatch(version) is not None


def _header_fields(block: bytes) -> dict[str, str]:
    """Host and User-Agent from the header lines, first occurrence wins.

    Only newline-terminated lines count (a cut last line would give a partial value), at most
    MAX_HEADER_LINES of them within MAX_HEADER_SCAN bytes; values are never interpreted, so a
    malformed Content-Length and the like cannot hurt.
    """
    lines = block[:MAX_HEADER_SCAN].split(b"\n", MAX_HEADER_LINES)[:-1]
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        key = _WANTED_HEADERS.get(name.lower())  # no whitespace allowed around the name (RFC 9112 §5.1)
        if colon and key and key not in fields:
            fields[key] = safe_text(value.strip(b" \t\r"))
    return fields
