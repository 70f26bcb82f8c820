"""Scenario registry: each theme module registers its capture builders with `@scenario(...)`.

A scenario is a function `rng -> CaptureFile`; the registry adds the output file name, a description and
the detector expectations that go into `manifest.json`. Detector ids are a public contract.
"""

from __future__ import annotations

import importlib
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from sample_pcaps.writer import CaptureFile

DETECTORS = (
    "arp-storm",
    "arp-unanswered",
    "pmtud-blackhole",
    "asymmetric-routing",
    "syn-flood",
    "port-exhaustion",
    "dns-failure",
    "tls-handshake-failure",
    "slowloris",
)

THEMES = ("formats", "healthy", "l2_arp", "l3_pmtud", "l3_asym", "l4_tcp", "dns", "tls", "l7_http", "hostile")

Builder = Callable[[random.Random], CaptureFile]


@dataclass(frozen=True)
class Scenario:
    """One output file. Detectors in neither `expect_fire` nor `expect_silent` are left to judgement
    (a secondary symptom, or an informational verdict), so tests must not assert on them."""

    file: str
    build: Builder
    description: str
    expect_fire: tuple[str, ...]
    expect_silent: tuple[str, ...]

    @property
    def seed(self) -> int:
        """Seed derived from the file name: stable across runs and independent of registration order."""
        return zlib.crc32(self.file.encode())

    def capture(self) -> CaptureFile:
        return self.build(random.Random(self.seed))


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    file: str, description: str, *, fire: tuple[str, ...] = (), unsure: tuple[str, ...] = ()
) -> Callable[[Builder], Builder]:
    """Register a builder; every detector not in `fire` or `unsure` is expected to stay silent."""
    unknown = (set(fire) | set(unsure)) - set(DETECTORS)
    if unknown:
        raise ValueError(f"unknown detector ids {sorted(unknown)}")

    def register(func: Builder) -> Builder:
        if file in SCENARIOS:
            raise ValueError(f"duplicate scenario file {file}")
        silent = tuple(d for d in DETECTORS if d not in fire and d not in unsure)
        SCENARIOS[file] = Scenario(file, func, description, tuple(fire), silent)
        return func

    return register


def all_scenarios() -> list[Scenario]:
    """Import every theme module (which fills the registry) and return scenarios sorted by file name."""
    for theme in THEMES:
        importlib.import_module(f"{__name__}.{theme}")
    return [SCENARIOS[name] for name in sorted(SCENARIOS)]
