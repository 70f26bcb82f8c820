"""Find the captures under the scan paths, recognised by magic, and refuse what must never be opened.

Archives name files any way (`.pcap` logs, extension-less captures, `.gz` of either), so a file is a capture when
its first bytes -- after any gzip/bzip2/xz wrapper, recognised by the reader's own magic tables -- are a pcap or
pcapng magic. Regular files that are not captures are only counted. What cannot be judged without risk is
refused with a reason, so the catalog shows it rather than the scan hanging or skipping it silently: a FIFO
blocks the reader forever, a device never ends, a symlink loop would make the walk endless, and an unreadable
or damaged file may well be a capture nobody analysed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from pcapsense.errors import NotACaptureError
from pcapsense.reader.chunks import STREAM_ERRORS
from pcapsense.reader.pcap import PCAP_MAGICS
from pcapsense.reader.pcapng import SHB
from pcapsense.reader.source import open_source
from pcapsense.scan.catalog import one_line

MAGIC_BYTES = 4
CAPTURE_MAGICS = frozenset(PCAP_MAGICS) | {SHB}
SPECIAL_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                 stat.S_IFSOCK: "socket"}
OS_REASONS = {errno.ELOOP: "symlink loop"}  # strerror says "Too many levels of symbolic links"

DirId = tuple[int, int]  # (st_dev, st_ino)
Pending = tuple[str, frozenset[DirId]]  # a path still to visit and the directories above it


@dataclass(frozen=True)
class Candidate:
    """A file that starts like a capture."""

    path: str  # what to open: absolute, symlinks resolved (may hold undecodable bytes as surrogates)
    key: str  # the same path as printable text: the catalog's unique key
    rel: str  # printable path relative to the scan root it was found under (labels it, names its report)
    size: int
    mtime: float


@dataclass(frozen=True)
class Refused:
    """Something in the archive that was not opened, and why (a one-line reason naming it)."""

    key: str
    rel: str
    reason: str


@dataclass
class Discovery:
    """What a walk found: each capture and refused entry once, in walk order."""

    captures: list[Candidate] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    ignored: int = 0  # regular files that are not captures

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.captures] + [r.key for r in self.refused]


def _os_reason(exc: OSError) -> str:
    return OS_REASONS.get(exc.errno or 0, f"cannot open: {exc.strerror or exc}")


def starts_like_capture(path: str) -> bool:
    """True when the file, decompressed if it is gzip/bzip2/xz, begins with a pcap or pcapng magic.

    Raises NotACaptureError when it cannot be opened or its compressed stream cannot be read.
    """
    source = open_source(path)
    try:
        head = source.stream.read(MAGIC_BYTES)
    except STREAM_ERRORS as exc:
        raise NotACaptureError(f"{path}: cannot read: {type(exc).__name__}: {exc}") from None
    finally:
        source.close()
    return len(head) == MAGIC_BYTES and int.from_bytes(head, "little") in CAPTURE_MAGICS


class _Walk:
    """Depth-first, sorted, following symlinks; a directory reached again from inside itself is a loop.

    Every entry is named by its real path (the catalog key); each real file and directory is visited once.
    """

    def __init__(self, found: Discovery) -> None:
        self.found = found
        self.seen: set[str] = {*found.keys}
        self.walked: set[DirId] = set()

    def root(self, root: str) -> None:
        base = root if os.path.isdir(root) else os.path.dirname(root) or os.curdir
        stack: list[Pending] = [(root, frozenset())]
        while stack:
            path, ancestors = stack.pop()
            children = self.visit(path, one_line(os.path.relpath(path, base)), ancestors)
            stack.extend(reversed(children))

    def visit(self, path: str, rel: str, ancestors: frozenset[DirId]) -> list[Pending]:
        real = os.path.realpath(path)
        key = one_line(real)
        try:
            st = os.stat(path)
        except OSError as exc:
            self.refuse(key, rel, _os_reason(exc))
            return []
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            return self.directory(path, rel, (st.st_dev, st.st_ino), ancestors)
        if kind != stat.S_IFREG:
            self.refuse(key, rel, f"not a regular file ({SPECIAL_KINDS.get(kind, oct(kind))})")
            return []
        if key in self.seen:
            return []
        try:
            if not starts_like_capture(real):
                self.found.ignored += 1
                return []
        except NotACaptureError as exc:
            self.refuse(key, rel, str(exc).removeprefix(f"{real}: "))
            return []
        self.seen.add(key)
        self.found.captures.append(Candidate(real, key, rel, st.st_size, st.st_mtime))
        return []

    def directory(self, path: str, rel: str, ident: DirId, ancestors: frozenset[DirId]) -> list[Pending]:
        if ident in ancestors:  # named by the link itself: its real path is the ancestor's
            self.refuse(one_line(os.path.abspath(path)), rel, f"symlink loop (leads back to {os.path.realpath(path)})")
            return []
        if ident in self.walked:  # the same directory through another link: already covered
            return []
        self.walked.add(ident)
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            self.refuse(one_line(os.path.realpath(path)), rel, f"cannot list directory: {exc.strerror or exc}")
            return []
        inner = ancestors | {ident}
        return [(os.path.join(path, name), inner) for name in names]

    def refuse(self, key: str, rel: str, why: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.found.refused.append(Refused(key, rel, f"{key}: {one_line(why)}"))


def discover(roots: Iterable[str]) -> Discovery:
    """Every capture and refused entry under `roots` (directories are walked, files taken as they are), once each."""
    found = Discovery()
    walk = _Walk(found)
    for root in roots:
        walk.root(root)
    return found
