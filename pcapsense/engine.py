"""One analysis: capture -> reader -> decoder -> flow table -> detectors -> findings -> triage.

The engine is the only place that knows the order of the pipeline. It counts everything it skips (unknown link
types, malformed packets by kind, evicted flows) so nothing disappears silently, and it keeps the results found
before a framing fault, marking the analysis partial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pcapsense import __version__
from pcapsense.decode.linktypes import LINK_LAYERS, linktype_name
from pcapsense.detector import STREAMS, CaptureContext, Detector, instantiate, load_detectors
from pcapsense.events import StreamBuilder
from pcapsense.findings import Finding
from pcapsense.flows import FlowLimits, FlowTable
from pcapsense.ladder import Rung, build_ladder
from pcapsense.prepare import prepare
from pcapsense.readahead import Started, decoded_batches
from pcapsense.reader import open_capture
from pcapsense.reader.source import DEFAULT_MAX_DECOMPRESSED
from pcapsense.stats import TrafficStats
from pcapsense.timeline import Timeline

Progress = Callable[[int, int, float], None]  # (bytes consumed, packets, seconds elapsed)


@dataclass
class AnalysisOptions:
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: FlowLimits = field(default_factory=FlowLimits)
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
    registry: dict[str, type[Detector]] | None = None  # detectors to run; None = every installed one
    series: bool = True  # collect the health figures the HTML report plots (off for pure JSON runs)
    read_ahead: bool = True  # large captures: read and decode in a forked child while this process analyses


@dataclass
class AnalysisResult:
    capture: dict[str, Any]
    stats: dict[str, Any]
    findings: list[Finding]
    ladder: list[Rung]
    narrative: str
    detectors: list[str]
    series: dict[str, Any] = field(default_factory=dict)  # per-layer health figures for the report

    def to_dict(self) -> dict[str, Any]:
        return {
            "pcapsense": __version__,
            "schema": 1,
            "capture": self.capture,
            "stats": self.stats,
            "findings": [f.to_dict() for f in self.findings],
            "ladder": [r.to_dict() for r in self.ladder],
            "narrative": self.narrative,
            "detectors": self.detectors,
        }


DELIVERY_BATCHES = 8  # hand queued streams to detectors every this many batches...
DELIVERY_CELLS = 2_000_000  # ...or once this many cells (rows x columns, ~16 MB) are queued, whichever is first


class _Dispatch:
    """Routes each stream to the detectors that subscribe to it; builds a stream only when someone listens.

    Streams are queued and delivered every few batches, all together and in STREAMS order (flow records last),
    because a detector call has a fixed cost: fewer, larger deliveries keep detectors off the per-batch hot
    path. Every delivery covers the same batches for every stream, and a flow's events always arrive before its
    record (records are emitted after the events of their batch).
    """

    def __init__(self, detectors: list[Detector]) -> None:
        self.subscribers: dict[str, list[Detector]] = {}
        for det in detectors:
            for stream in det.streams():
                self.subscribers.setdefault(stream, []).append(det)
        self._queued: dict[str, list[pd.DataFrame]] = {}
        self._cells = 0
        self._batches = 0

    def wants(self, stream: str) -> bool:
        return stream in self.subscribers

    def queue(self, stream: str, frame: pd.DataFrame | None) -> None:
        if frame is None or not len(frame) or stream not in self.subscribers:
            return
        self._queued.setdefault(stream, []).append(frame)
        self._cells += frame.size

    def make_room(self, frame: pd.DataFrame) -> None:
        """Deliver now if queueing another frame of this size would pass the cell bound."""
        if self._cells + frame.size > DELIVERY_CELLS:
            self.flush()

    def batch_done(self) -> None:
        """Deliver every few batches, or sooner when the queue grows large (a flood of flow records)."""
        self._batches += 1
        if self._batches >= DELIVERY_BATCHES or self._cells >= DELIVERY_CELLS:
            self.flush()

    def flush(self) -> None:
        for stream in STREAMS:
            frames = self._queued.pop(stream, None)
            if not frames:
                continue
            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            for det in self.subscribers[stream]:
                getattr(det, f"on_{stream}")(frame)
        self._cells = self._batches = 0


def analyze(path: str, options: AnalysisOptions | None = None, progress: Progress | None = None,
            early: Started | None = None) -> AnalysisResult:
    """Analyse one capture in a single streaming pass. `early`: the capture at `path` already opened and being
    read ahead (readahead.start), by a caller that started it before loading the engine."""
    options = options or AnalysisOptions()
    started = time.monotonic()
    opened = early.opened if early is not None else open_capture(path, max_decompressed=options.max_decompressed)
    reader = opened.reader
    registry = options.registry if options.registry is not None else load_detectors()
    table = FlowTable(options.limits)
    streams = StreamBuilder()
    stats = TrafficStats()
    timeline = Timeline() if options.series else None
    detectors: list[Detector] = []
    dispatch = _Dispatch([])
    context_ready = False
    listened = frozenset(s for cls in registry.values() for s in cls.streams()) | frozenset(
        timeline.wants if timeline is not None else ())
    batches = early.batches if early is not None else decoded_batches(reader, options.read_ahead)
    try:
        for batch in batches:
            pk = batch.packets
            prepared = prepare(pk, batch.dns, listened)
            if not context_ready:
                context = CaptureContext(opened.source.name, tuple(i.linktype for i in reader.interfaces),
                                         len(reader.interfaces))
                detectors = instantiate(registry, options.overrides, context)
                dispatch = _Dispatch(detectors)
                context_ready = True
            info = table.update(pk, prepared.keys)
            row_of = np.full(len(pk), -1, dtype=np.int64)
            row_of[info.rows] = np.arange(len(info.rows))
            stats.add_batch(pk, info)
            if timeline is not None:
                timeline.add_batch(pk, info)
            for name in ("arp", "broadcast", "ndp", "icmp_errors", "tcp_retransmissions", "tls", "http"):
                plotted = timeline is not None and name in timeline.wants
                if dispatch.wants(name) or plotted:
                    frame = streams.build(name, pk, info, row_of, prepared)
                    if plotted:
                        timeline.add_stream(name, frame)
                    dispatch.queue(name, frame)
            streams.count_prepared(prepared)
            dns = streams.build("dns", pk, info, row_of, prepared)
            stats.add_dns(dns)
            if timeline is not None:
                timeline.add_stream("dns", dns)
            dispatch.queue("dns", dns)
            _emit_flows(table.expire_records(), stats, streams, dispatch, timeline)
            dispatch.batch_done()
            if progress is not None:
                progress(reader.chunks.base, stats.packets, time.monotonic() - started)
    finally:
        batches.close()
        opened.close()
    if not context_ready:
        context = CaptureContext(opened.source.name, tuple(i.linktype for i in reader.interfaces),
                                 len(reader.interfaces))
        detectors = instantiate(registry, options.overrides, context)
        dispatch = _Dispatch(detectors)
    _emit_flows(table.drain_records(), stats, streams, dispatch, timeline)
    dispatch.flush()
    findings = _collect(detectors, stats)
    capture = _capture_facts(opened.source, reader, stats)
    stats_dict = stats.to_dict(table.stats, streams.malformed, options.limits)
    stats_dict["elapsed_s"] = round(time.monotonic() - started, 3)
    ladder, narrative = build_ladder(findings, stats.observed())
    series = timeline.to_dict() if timeline is not None else {}
    return AnalysisResult(capture, stats_dict, findings, ladder, narrative, sorted(registry), series)


def _emit_flows(records: Iterable[pd.DataFrame], stats: TrafficStats, streams: StreamBuilder,
                dispatch: _Dispatch, timeline: Timeline | None) -> None:
    """Account and queue flow records frame by frame as the table builds them. The queue is delivered as soon as
    it could not take another frame like the last one, before the table builds the next: the records of many
    flows leaving at once (a flood, the whole table at the end of the capture) never exist all together."""
    for frame in records:
        stats.add_flows(frame)
        if timeline is not None:
            timeline.add_flows(frame)
        streams.forget(frame["conn_id"].to_numpy())
        dispatch.queue("flows", frame)
        dispatch.make_room(frame)


def _collect(detectors: list[Detector], stats: TrafficStats) -> list[Finding]:
    findings: list[Finding] = []
    for det in detectors:
        for finding in det.finish():
            finding.caveats = [*finding.caveats, *stats.caveats_for(finding)]
            findings.append(finding)
    findings.sort(key=lambda f: (-int(f.severity), f.layer, f.detector))
    return findings


def _capture_facts(source: Any, reader: Any, stats: TrafficStats) -> dict[str, Any]:
    warnings = list(reader.warnings)
    if reader.fault is not None:
        warnings.insert(0, reader.fault.describe(source.name))
    for name, count in sorted(reader.counters.items()):
        warnings.append(f"{name.replace('_', ' ')}: {count}")
    unknown = {lt: n for lt, n in stats.link_packets.items() if lt not in LINK_LAYERS}
    for lt, n in sorted(unknown.items()):
        warnings.append(f"{n} packets on {linktype_name(lt)} were counted but not decoded")
    return {
        "path": source.name,
        "format": reader.format,
        "compression": source.compression,
        "link_types": [{"linktype": i.linktype, "name": linktype_name(i.linktype), "interface": i.index}
                       for i in reader.interfaces],
        "interfaces": len(reader.interfaces),
        "packets": stats.packets,
        "bytes": stats.wire_bytes,
        "first_ts": stats.first_ts,
        "last_ts": stats.last_ts,
        "partial": reader.fault is not None,
        "fault": None if reader.fault is None else {"record": reader.fault.record, "offset": reader.fault.offset,
                                                    "message": reader.fault.message},
        "warnings": warnings,
    }

