"""The report directory: refuse to clobber an existing report, and write only inside the directory.

Names of the files written come from pcapsense itself (page names, detector ids made filename-safe and an
index), never from packet data; still, every path is resolved and checked to stay under the directory, and
files are opened without following a symlink planted in their place (research §4.4, CVE-2018-1000161).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from pcapsense.errors import PcapsenseError

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
CAPTURE_SUFFIXES = (".gz", ".bz2", ".xz", ".pcapng", ".pcap", ".cap", ".ntar")
NAME_LIMIT = 100


class ReportExistsError(PcapsenseError):
    """The report directory already holds files and `--force` was not given."""


class UnsafePathError(PcapsenseError):
    """A path would leave the report directory (or go through a symlink)."""


def safe_name(text: str, fallback: str) -> str:
    """A file or directory name of letters, digits, `.`, `_` and `-`, never hidden, `.` or `..`."""
    name = SAFE_NAME.sub("_", text).strip("._")[:NAME_LIMIT]
    return name or fallback


def capture_stem(capture_path: str | None) -> str:
    """The capture's name without its capture and compression suffixes (`x.pcap.gz` -> `x`; stdin -> `stdin`)."""
    if capture_path in (None, "-"):
        return "stdin"
    name = Path(capture_path).name
    while name.lower().endswith(CAPTURE_SUFFIXES):
        name = name[: name.rindex(".")]
    return safe_name(name, "capture")


def check_report_dir(path: Path, *, force: bool) -> None:
    """Raise ReportExistsError if a report could not be written to `path`; changes nothing (the CLI calls it
    before a long analysis, so a refusal comes first, not last)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ReportExistsError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ReportExistsError(f"{path}: report directory exists and is not empty (use --force to overwrite)")


class OutputDir:
    """A directory the report owns; `write` refuses anything that would land outside it."""

    def __init__(self, path: Path, *, force: bool) -> None:
        check_report_dir(path, force=force)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.root = Path(path).resolve()

    def path(self, relative: str) -> Path:
        """The absolute path of `relative` inside the directory; parents are created, symlinks refused."""
        target = (self.root / relative).resolve()
        if os.path.commonpath([self.root, target]) != str(self.root) or target == self.root:
            raise UnsafePathError(f"{relative}: outside the report directory {self.root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, relative: str, data: str | bytes) -> Path:
        target = self.path(relative)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        with self.open(relative) as fh:
            fh.write(payload)
        return target

    def open(self, relative: str) -> BinaryIO:
        """Open for writing, truncating our own earlier file but never following a symlink in its place."""
        target = self.path(relative)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise UnsafePathError(f"{target}: cannot write: {exc.strerror or exc}") from None
        return os.fdopen(fd, "wb")
