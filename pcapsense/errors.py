"""Exceptions the core raises. Each carries enough context for a one-line message to the analyst."""

from __future__ import annotations


class PcapsenseError(Exception):
    """Base class: anything the CLI turns into a clean message instead of a traceback."""


class NotACaptureError(PcapsenseError):
    """The input is not a pcap or pcapng file at all (wrong magic, empty, text)."""


class UnsupportedCaptureError(PcapsenseError):
    """The input is a capture, but of a version or variant we cannot read (e.g. pcap major version 1)."""


class MalformedPacket(Exception):
    """A single packet (or message inside it) could not be decoded.

    `kind` is a short stable label ("dns-name-loop", "tls-truncated", ...) that the core counts per kind:
    malformed packets are never fatal, only counted.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
