"""The detector API and registry.

A detector is policy: which pattern, which thresholds and why, what to tell the analyst. It declares a stable
kebab-case `id`, its `layer`, a dataclass of thresholds (each with its default and the source of that default),
handlers named `on_<stream>` for the event streams it needs, and `finish()` which yields findings. The core
computes only the streams some detector subscribes to. Detectors register through the `pcapsense.detectors`
entry-point group, the same door a third-party package uses; the core never names a detector.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pcapsense.errors import PcapsenseError
from pcapsense.findings import LAYERS, Finding

ENTRY_POINT_GROUP = "pcapsense.detectors"
ID_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# Event streams a detector may subscribe to with an `on_<name>(batch)` method.
STREAMS = ("arp", "broadcast", "ndp", "icmp_errors", "tcp_retransmissions", "dns", "tls", "http", "flows")


class UsageError(PcapsenseError):
    """A command-line usage problem (unknown detector, unknown threshold, bad value)."""


def tunable(default: Any, *, source: str, doc: str) -> Any:
    """A threshold field: its default, where that default comes from (OS default, RFC, vendor), what it does."""
    return field(default=default, metadata={"source": source, "doc": doc})


@dataclass(frozen=True)
class CaptureContext:
    """What a detector may know about the capture as a whole."""

    name: str
    link_types: tuple[int, ...]
    interfaces: int


class Detector:
    """Base class of every detector. Subclasses set the class attributes and define handlers."""

    id: ClassVar[str]
    layer: ClassVar[str]
    title: ClassVar[str]
    Thresholds: ClassVar[type]

    def __init__(self, thresholds: Any, context: CaptureContext) -> None:
        self.t = thresholds
        self.context = context

    def finish(self) -> Iterable[Finding]:
        return ()

    @classmethod
    def streams(cls) -> tuple[str, ...]:
        return tuple(name for name in STREAMS if callable(getattr(cls, f"on_{name}", None)))


def _validate(cls: type) -> type[Detector]:
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise PcapsenseError(f"entry point {cls!r} is not a pcapsense Detector")
    if not ID_PATTERN.match(getattr(cls, "id", "")):
        raise PcapsenseError(f"detector {cls.__name__} has no kebab-case id")
    if cls.layer not in LAYERS:
        raise PcapsenseError(f"detector {cls.id} has layer {cls.layer!r}, not one of {', '.join(LAYERS)}")
    if not dataclasses.is_dataclass(cls.Thresholds):
        raise PcapsenseError(f"detector {cls.id} must declare its Thresholds as a dataclass")
    return cls


def load_detectors() -> dict[str, type[Detector]]:
    """Every installed detector class by id, from the entry-point group."""
    found: dict[str, type[Detector]] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        cls = _validate(ep.load())
        if cls.id in found:
            raise PcapsenseError(f"two detectors claim the id {cls.id!r}")
        found[cls.id] = cls
    return found


def _coerce(value: str, current: Any, where: str) -> Any:
    kind = type(current)
    try:
        if kind is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes", "on")
        return kind(value)
    except ValueError:
        raise UsageError(f"--set {where}: {value!r} is not a valid {kind.__name__}") from None


def parse_overrides(items: Iterable[str], registry: dict[str, type[Detector]]) -> dict[str, dict[str, Any]]:
    """Turn `detector.field=value` strings into per-detector override dicts, validating every name."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        det_id, dot, field_name = name.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected DETECTOR.FIELD=VALUE")
        if det_id not in registry:
            raise UsageError(f"--set {item!r}: unknown detector {det_id!r} (see `pcapsense detectors`)")
        defaults = registry[det_id].Thresholds()
        if field_name not in {f.name for f in dataclasses.fields(defaults)}:
            raise UsageError(f"--set {item!r}: detector {det_id!r} has no threshold {field_name!r}")
        out.setdefault(det_id, {})[field_name] = _coerce(value, getattr(defaults, field_name), name)
    return out


def instantiate(registry: dict[str, type[Detector]], overrides: dict[str, dict[str, Any]],
                context: CaptureContext) -> list[Detector]:
    return [cls(dataclasses.replace(cls.Thresholds(), **overrides.get(det_id, {})), context)
            for det_id, cls in registry.items()]


def describe_thresholds(cls: type[Detector]) -> Iterator[tuple[str, Any, str, str]]:
    """(name, default, source, doc) for each threshold of a detector."""
    for f in dataclasses.fields(cls.Thresholds):
        yield f.name, f.default, f.metadata.get("source", ""), f.metadata.get("doc", "")
