#!/usr/bin/env python3
"""Batch-scan throughput: captures/s of `pcapsense scan` with 1 worker (in-process) and 2 (local Dask cluster).

    python benchmarks/bench_scan.py                          # 4 copies of the samples + 8 synthetic captures
    python benchmarks/bench_scan.py --copies 1 --large 2     # quick run
    python benchmarks/bench_scan.py --workers 1,2,4          # other worker counts

The archive is generated deterministically into `--out` (default benchmarks/out/scan-archive) and reused: the
sample captures (`python -m sample_pcaps.generate`) copied `--copies` times, plus `--large` synthetic captures of
`--large-packets` packets each from `bench_analyze.write_benchmark_capture` (seeds 1..N), so the mix holds many
small captures (where per-task overhead shows) and a few that take real analysis time.

Each configuration scans the whole archive into a fresh catalog and output directory through the command's own
code path (discover, plan, run, index). The analysis phase is timed from the executor being ready (local cluster
started) to the last committed outcome; cluster start-up is reported apart, since on a small archive it dominates
the wall time. The speed-up is the ratio of analysis-phase captures/s against the first worker count. Repeats are
interleaved across worker counts and the best of `--repeat` runs is kept. Results go to `<out>/bench_scan.json`.
The load average is printed because a busy machine (other jobs on the same cores) flattens any parallel speed-up;
the CPU seconds (this process, plus the local cluster's worker processes once reaped) show what the Dask path
costs in total, whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pcapsense import __version__
from pcapsense.detector import load_detectors
from pcapsense.scan import batch
from pcapsense.scan.catalog import Catalog, analyzer_version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_analyze import write_benchmark_capture  # noqa: E402 - a sibling script, not a package

MB = 1e6


def build_archive(out: Path, copies: int, large: int, large_packets: int) -> Path:
    """The benchmark archive under `out` (written once per parameter set, then reused)."""
    archive = out / f"archive-c{copies}-l{large}x{large_packets}"
    if (archive / ".complete").exists():
        return archive
    shutil.rmtree(archive, ignore_errors=True)
    samples = archive / "samples"
    subprocess.run([sys.executable, "-m", "sample_pcaps.generate", "--out", str(samples)], check=True, cwd=ROOT,
                   capture_output=True)
    for n in range(1, copies):
        shutil.copytree(samples, archive / f"copy{n}")
    for seed in range(1, large + 1):
        (archive / "large").mkdir(exist_ok=True)
        write_benchmark_capture(archive / "large" / f"bench_{seed}.pcap", large_packets, seed=seed)
    (archive / ".complete").touch()
    return archive


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the local cluster's workers, once it is closed)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def scan_once(archive: Path, workers: int, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    config = batch.ScanConfig((str(archive),), work / "out", workers)
    version = analyzer_version(__version__, load_detectors())
    started, cpu = time.monotonic(), cpu_seconds()
    with Catalog(work / "catalog.sqlite", create=True) as catalog:
        plan = batch.prepare(config, catalog, version)
        stats = batch.run(config, catalog, plan, version, lambda _bytes: None)
        batch.index(config, catalog, plan)
    wall, cpu = time.monotonic() - started, cpu_seconds() - cpu
    captures, nbytes = len(plan.tasks), sum(plan.sizes.values())
    return {"workers": workers, "captures": captures, "mb": nbytes / MB, "startup_s": stats.startup_s,
            "analysis_s": stats.elapsed_s, "wall_s": wall, "captures_per_s": captures / stats.elapsed_s,
            "mb_per_s": nbytes / MB / stats.elapsed_s, "cpu_s": cpu, "statuses": dict(stats.statuses)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=4, help="copies of the sample captures (default 4)")
    ap.add_argument("--large", type=int, default=8, help="synthetic captures (default 8)")
    ap.add_argument("--large-packets", type=int, default=50_000, help="packets per synthetic capture (default 50000)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count; the fastest is kept")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="work directory (default benchmarks/out)")
    args = ap.parse_args(argv)

    archive = build_archive(args.out, args.copies, args.large, args.large_packets)
    print(f"archive {archive}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start")
    counts = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits every worker count alike
        for workers in counts:
            runs[workers].append(scan_once(archive, workers, args.out / f"scan-w{workers}"))
    results = [min(runs[w], key=lambda r: r["analysis_s"]) for w in counts]
    base = results[0]["captures_per_s"]
    print(f"{'workers':>7} {'captures':>8} {'MB':>8} {'start-up s':>10} {'analysis s':>10} {'captures/s':>10} "
          f"{'MB/s':>8} {'wall s':>8} {'CPU s':>8} {'speed-up':>8}")
    for r in results:
        r["speedup"] = r["captures_per_s"] / base
        print(f"{r['workers']:>7} {r['captures']:>8} {r['mb']:>8.1f} {r['startup_s']:>10.2f} {r['analysis_s']:>10.2f} "
              f"{r['captures_per_s']:>10.1f} {r['mb_per_s']:>8.1f} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
              f"{r['speedup']:>7.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    (args.out / "bench_scan.json").write_text(json.dumps({"archive": str(archive), "cpus": os.cpu_count(),
                                                          "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
