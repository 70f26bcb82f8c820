"""Regenerate the sample captures and `manifest.json`: `python -m sample_pcaps.generate [--out DIR]`.

Output is byte-for-byte deterministic (fixed epoch, per-file seeds, gzip mtime 0), so the committed files
double as a regression check on this generator: `tests/test_sample_generator.py` rebuilds and compares.

Manifest entry fields: `file`; `format` ("pcap"/"pcapng", of the inflated content); `compressed` (gzip);
`link_types` (sorted distinct link types of all interfaces); `packets` (packet records: EPB+SPB+PB for
pcapng, not custom or unknown blocks); `first_ts`/`last_ts` (first/last timestamped record in file order,
exact, 9 decimals; an SPB has no timestamp; every file is in time order); `interfaces` (IDBs over all
sections; 1 for pcap); `description`; `expect_fire`/`expect_silent` (detector ids; a detector in neither
list is not asserted on that file).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from sample_pcaps.scenarios import Scenario, all_scenarios
from sample_pcaps.writer import ts_string

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


def render(sc: Scenario) -> tuple[bytes, dict[str, object]]:
    """Build one scenario: the file bytes and its manifest entry."""
    capture = sc.capture()
    data = capture.to_bytes()
    compressed = sc.file.endswith(".gz")
    if compressed:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    info = capture.summary()
    entry: dict[str, object] = {
        "file": sc.file,
        "format": info.format,
        "compressed": compressed,
        "link_types": list(info.link_types),
        "packets": info.packets,
        "first_ts": ts_string(info.first_ts_ns),
        "last_ts": ts_string(info.last_ts_ns),
        "interfaces": info.interfaces,
        "description": sc.description,
        "expect_fire": list(sc.expect_fire),
        "expect_silent": list(sc.expect_silent),
    }
    return data, entry


def manifest_text(entries: list[dict[str, object]]) -> str:
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


def generate(out: Path) -> list[dict[str, object]]:
    """Write every capture and the manifest into `out`; returns the manifest entries."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for sc in all_scenarios():
        data, entry = render(sc)
        (out / sc.file).write_bytes(data)
        entries.append(entry)
    (out / MANIFEST).write_text(manifest_text(entries), encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: the sample_pcaps folder)")
    args = parser.parse_args(argv)
    entries = generate(args.out)
    total = sum((args.out / str(e["file"])).stat().st_size for e in entries)
    print(f"wrote {len(entries)} captures ({total} bytes) and {MANIFEST} to {args.out}")


if __name__ == "__main__":
    main()
