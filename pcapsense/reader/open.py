"""Recognise a capture by its magic and hand back the matching reader."""

from __future__ import annotations

from dataclasses import dataclass

from pcapsense.errors import NotACaptureError, UnsupportedCaptureError
from pcapsense.reader.chunks import STREAM_ERRORS, ChunkStream, MappedChunks, can_map
from pcapsense.reader.limits import CHUNK_BYTES, PIPE_CHUNK_BYTES
from pcapsense.reader.pcap import FILE_HEADER, PCAP_MAGICS, PcapReader
from pcapsense.reader.pcapng import SHB, PcapngReader
from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED, Source, open_source

CaptureReader = PcapReader | PcapngReader


@dataclass
class OpenCapture:
    """An open source plus the reader walking it."""

    source: Source
    reader: CaptureReader

    def close(self) -> None:
        self.source.close()


def _read_head(source: Source, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            chunk = source.stream.read(n - got)
        except STREAM_ERRORS as exc:
            raise NotACaptureError(f"{source.name}: cannot read: {exc}") from None
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _chunk_stream(source: Source, head: bytes) -> ChunkStream:
    """Map a regular uncompressed file (its bytes are then never copied); read stdin, pipes and decompressors."""
    if source.mappable and can_map(source.stream.fileno()):
        return MappedChunks(source.stream, CHUNK_BYTES, head)
    return ChunkStream(source.stream, PIPE_CHUNK_BYTES if source.is_pipe else CHUNK_BYTES, head)


def open_capture(path: str, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> OpenCapture:
    """Open a capture for one streaming pass. Raises NotACaptureError/UnsupportedCaptureError with the file name."""
    source = open_source(path, max_decompressed=max_decompressed)
    try:
        head = _read_head(source, FILE_HEADER)
        magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
        if magic in PCAP_MAGICS:
            if len(head) < FILE_HEADER:
                raise NotACaptureError(f"{source.name}: truncated pcap file header: {len(head)} of {FILE_HEADER} bytes")
            reader: CaptureReader = PcapReader(_chunk_stream(source, head))
        elif magic == SHB:
            reader = PcapngReader(_chunk_stream(source, head))
        elif not head:
            raise NotACaptureError(f"{source.name}: not a pcap or pcapng file (empty)")
        else:
            shown = head[:4].hex()
            raise NotACaptureError(f"{source.name}: not a pcap or pcapng file (magic 0x{shown})")
    except UnsupportedCaptureError as exc:
        source.close()
        raise UnsupportedCaptureError(f"{source.name}: {exc}") from None
    except NotACaptureError:
        source.close()
        raise
    return OpenCapture(source, reader)
