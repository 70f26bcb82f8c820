"""One place that turns attacker-controlled bytes into printable, single-line, bounded text.

Every string a decoder takes from a packet (DNS names, SNI, ALPN, HTTP request line and headers) goes
through `safe_text` before it leaves the decoder, so later stages (console, CSV, HTML report, charts) can
rely on three properties: it is valid Unicode, it is one visible line, and it has a known maximum size.
HTML escaping is *not* done here: the report escapes for its own context.
"""

from __future__ import annotations

# Invalid UTF-8 bytes come back from the "surrogateescape" handler as U+DC80..U+DCFF; we render them as
# the byte they stood for.
_ESCAPED_BYTE_BASE = 0xDC00
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
_UTF8_CONTINUATION_MASK, _UTF8_CONTINUATION = 0xC0, 0x80
_MAX_UTF8_CONTINUATIONS = 3


def safe_text(raw: bytes | str, limit: int = 256) -> str:
    """Render `raw` as printable single-line text of bounded size.

    Bytes are decoded as UTF-8. Whatever a terminal or browser would not show as itself is escaped:
    invalid bytes and code points below U+0100 become ``\\xNN``, others ``\\uNNNN`` / ``\\UNNNNNNNN``.
    That covers NUL, C0/C1 controls, DEL, line/paragraph separators, bidi overrides and isolates
    (U+202A-U+202E, U+2066-U+2069) and other invisible format characters, i.e. everything
    `str.isprintable` rejects. A backslash is doubled so traffic containing the literal text ``\\x41``
    cannot pass for an escaped byte.

    Input longer than `limit` (bytes for `bytes`, characters for `str`) is cut and suffixed with
    ``…[+N bytes]`` / ``…[+N chars]`` so the analyst still sees that, and how much, was dropped. Only the
    kept part is decoded, so the cost is O(limit) however large `raw` is; the result is at most
    ``10 * limit`` characters plus the suffix (all characters escaped as ``\\UNNNNNNNN``).
    """
    if isinstance(raw, str):
        kept, suffix = _cut_str(raw, limit)
    else:
        kept, suffix = _cut_bytes(raw, limit)
    return _escape(kept) + suffix


def _cut_str(raw: str, limit: int) -> tuple[str, str]:
    """Keep at most `limit` characters; describe the rest."""
    if len(raw) <= limit:
        return raw, ""
    return raw[:limit], f"…[+{len(raw) - limit} chars]"


def _cut_bytes(raw: bytes, limit: int) -> tuple[str, str]:
    """Keep at most `limit` bytes, decoded; describe the rest.

    The cut backs off to the start of a UTF-8 sequence it would split, so a long but valid name does not
    end in spurious ``\\xNN`` escapes; the whole character is counted in the omitted bytes instead.
    """
    raw = bytes(raw)
    if len(raw) <= limit:
        return raw.decode("utf-8", "surrogateescape"), ""
    cut = _utf8_boundary(raw, limit)
    return raw[:cut].decode("utf-8", "surrogateescape"), f"…[+{len(raw) - cut} bytes]"


def _utf8_boundary(raw: bytes, limit: int) -> int:
    """Largest index <= `limit` that does not split a multi-byte UTF-8 sequence (`limit` if unsure)."""
    cut = limit
    while cut > 0 and limit - cut < _MAX_UTF8_CONTINUATIONS and _is_continuation(raw[cut]):
        cut -= 1
    return cut if raw[cut] >= 0xC0 else limit


def _is_continuation(byte: int) -> bool:
    return byte & _UTF8_CONTINUATION_MASK == _UTF8_CONTINUATION


def _escape(text: str) -> str:
    """Escape every non-printable character and the backslash; fast path for the common clean case."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape_char(ch) for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if code in _ESCAPED_BYTES:
        return f"\\x{code - _ESCAPED_BYTE_BASE:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
