"""Wireshark's own view of each finding: tshark's dissection of its key evidence frames, through pyshark.

An analyst trusts a finding once the frames look the same in Wireshark, so each finding shows tshark's
dissection of its first evidence frames. One tshark run over the original capture serves the whole report:
its TCP and TLS analysis then has the context of every earlier packet (a retransmission is called one), the
display filter selects just the key frames, and the run stops as soon as they are all in or at TIMEOUT_S.
Without tshark or pyshark the report says how to get them; nothing else depends on them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pcapsense.findings import Finding
from pcapsense.report.evidence import rereadable

KEY_FRAMES = 3  # per finding
MAX_FRAMES = 60  # per report
TIMEOUT_S = 60.0
FIELDS_PER_LAYER = 150
TSHARK_OPENS = (None, "gzip")  # compressions tshark reads by itself
NO_TSHARK = ("Install Wireshark's tshark to see its dissection here (Debian/Ubuntu: apt-get install tshark; "
             "macOS: brew install wireshark).")
NO_PYSHARK = "Install pyshark (pip install 'pcapsense[wireshark]') to see tshark's dissection here."
NEEDS_FILE = "tshark's dissection needs a capture file: this capture was read from stdin or a pipe."


@dataclass(frozen=True)
class Layer:
    name: str
    lines: tuple[str, ...]


@dataclass
class Dissection:
    """tshark's layers per frame number, and a note when some or all of them are missing (and why)."""

    frames: dict[int, list[Layer]] = field(default_factory=dict)
    note: str = ""


def key_frames(finding: Finding) -> list[int]:
    """The first evidence frames, in the order the detector gave them (it puts the telling ones first)."""
    return list(dict.fromkeys(finding.evidence.frames))[:KEY_FRAMES]


def dissect(findings: Iterable[Finding], capture_path: str | None, compression: str | None) -> Dissection:
    """Run tshark once over the capture for the key frames of all findings (most severe first)."""
    wanted = list(dict.fromkeys(f for finding in findings for f in key_frames(finding)))[:MAX_FRAMES]
    if not wanted:
        return Dissection()
    if shutil.which("tshark") is None:
        return Dissection(note=NO_TSHARK)
    try:
        import pyshark
        from pyshark.capture.capture import StopCapture, TSharkCrashException
    except ImportError:
        return Dissection(note=NO_PYSHARK)
    if not rereadable(capture_path):
        return Dissection(note=NEEDS_FILE)
    if compression not in TSHARK_OPENS:
        return Dissection(note=f"tshark cannot open {compression}-compressed captures: decompress the capture "
                               "to see its dissection here.")
    result = Dissection()
    remaining = set(wanted)

    def keep(packet: Any) -> None:
        number = int(packet.number)
        result.frames[number] = [_layer(layer) for layer in packet.layers]
        remaining.discard(number)
        if not remaining:
            raise StopCapture

    capture = pyshark.FileCapture(capture_path, display_filter="frame.number in {" + ", ".join(map(str, wanted))
                                  + "}", keep_packets=False)
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.ERROR)  # stopping tshark early makes asyncio warn about the child it reaped
    try:
        capture.apply_on_packets(keep, timeout=TIMEOUT_S)
    except TimeoutError:
        result.note = f"tshark did not reach every key frame within {TIMEOUT_S:.0f} s; those frames are missing."
    except TSharkCrashException as exc:
        result.note = f"tshark failed: {exc}"
    finally:
        capture.close()
        asyncio_log.setLevel(level)
    return result


def _layer(layer: Any) -> Layer:
    """A layer as Wireshark's detail pane lists it: each field's display line (showname), hidden ones left out."""
    lines: list[str] = []
    for name in layer.field_names:
        main = layer.get_field(name)
        for item in (main, *getattr(main, "alternate_fields", ())):
            text = getattr(item, "showname", None) or getattr(item, "show", None)
            if text and not getattr(item, "hide", False):
                lines.append(str(text))
    return Layer(str(layer.layer_name), tuple(lines[:FIELDS_PER_LAYER]))
