"""One scan from start to end: discover, keep what the catalog already knows, analyse the rest, index it all.

Refused entries are recorded first (they need no worker). Each outcome is committed the moment it arrives, so
the catalog is always the truth about what is done. The fleet index is rebuilt from the catalog at the end, so it
shows the captures skipped as unchanged as well as those analysed in this run.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED
from pcapsense.scan.catalog import FAILED, Catalog, new_outcome
from pcapsense.scan.discover import Discovery, discover
from pcapsense.scan.fleet import Capture, write_fleet_index
from pcapsense.scan.reports import report_link, report_name
from pcapsense.scan.runner import Task, executor


@dataclass(frozen=True)
class ScanConfig:
    paths: tuple[str, ...]
    out_dir: Path
    workers: int
    scheduler: str | None = None
    rescan: bool = False
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED


@dataclass
class Plan:
    """What this scan found and what it still has to analyse (largest first, so no big file is left for last)."""

    discovery: Discovery
    names: dict[str, str]  # catalog key -> report directory name, for every capture found
    tasks: list[Task] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # catalog key -> bytes on disk, of the tasks
    skipped: int = 0  # unchanged since the catalogued analysis by this analyzer version


@dataclass(frozen=True)
class RunStats:
    statuses: Counter[str]  # outcomes of this run: ok / partial / failed / unchanged
    startup_s: float  # starting the local cluster or connecting to the scheduler
    elapsed_s: float  # from the executor being ready to the last outcome


def prepare(config: ScanConfig, catalog: Catalog, version: str) -> Plan:
    """Discover, record the refused entries, and plan the analyses the catalog cannot spare."""
    found = discover(config.paths)
    for refused in found.refused:
        catalog.record(new_outcome(refused.key, FAILED, version, error=refused.reason))
    priors = catalog.priors()
    plan = Plan(found, {c.key: report_name(c.rel, c.key) for c in found.captures})
    for capture in sorted(found.captures, key=lambda c: -c.size):
        name = plan.names[capture.key]
        prior = None if config.rescan else priors.get(capture.key)
        known = prior.reusable_hash(version, report_link(config.out_dir, name) is not None) if prior else None
        if prior is not None and known is not None and prior.same_stat(capture.size, capture.mtime):
            plan.skipped += 1
            continue
        plan.tasks.append(Task(capture.path, capture.key, name, str(config.out_dir), known, config.max_decompressed))
        plan.sizes[capture.key] = capture.size
    return plan


def run(config: ScanConfig, catalog: Catalog, plan: Plan, version: str,
        advance: Callable[[int], None]) -> RunStats:
    """Analyse the planned captures, committing each outcome as it arrives; `advance(bytes)` after each."""
    statuses: Counter[str] = Counter()
    started = ready = time.monotonic()
    if plan.tasks:
        with executor(config.workers, config.scheduler, version) as execute:
            ready = time.monotonic()
            for outcome in execute(plan.tasks):
                catalog.record(outcome)
                statuses[outcome["status"]] += 1
                advance(plan.sizes[outcome["key"]])
    return RunStats(statuses, ready - started, time.monotonic() - ready)


def _link(config: ScanConfig, plan: Plan, row: dict[str, Any]) -> str | None:
    """A failed capture gets no link: a report left from an earlier analysis would describe other content."""
    name = plan.names.get(row["path"])
    return None if name is None or row["status"] == FAILED else report_link(config.out_dir, name)


def index(config: ScanConfig, catalog: Catalog, plan: Plan) -> tuple[Path, Counter[str]]:
    """Write the fleet index of this scan's captures; returns its path and their catalogued statuses."""
    rows, findings = catalog.scan_view(plan.discovery.keys)
    by_capture: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for finding in findings:
        by_capture[finding["path"]].append(finding)
    labels = {entry.key: entry.rel for entry in (*plan.discovery.captures, *plan.discovery.refused)}
    captures = [Capture(row, labels[row["path"]], _link(config, plan, row), by_capture[row["path"]]) for row in rows]
    captures.sort(key=lambda c: c.label)
    return write_fleet_index(config.out_dir, captures), Counter(row["status"] for row in rows)
