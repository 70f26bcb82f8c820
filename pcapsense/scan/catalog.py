"""The catalog: one SQLite file remembering every capture scanned and every finding, across runs and kills.

Why it is built this way:
- Each capture's outcome is committed in one transaction as soon as it arrives (the row, then its findings
  replaced), so a scan killed at any moment loses only the captures in flight and never half of a capture.
- `captures.path` is UNIQUE and a new analysis replaces the capture's findings inside that same transaction, so
  a capture is never recorded twice and its findings are never duplicated or lost across a kill and a resume.
- Only the client process writes (workers return plain data): one writer, no lock contention between workers.
  WAL lets `pcapsense findings` read while a scan writes; `foreign_keys` makes the findings' reference real.
- Resume is decided here (`Prior`): a capture is skipped when its size and mtime are those catalogued and the
  same analyzer version produced the entry; when only the mtime moved, the worker compares content hashes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

from pcapsense.decode.text import safe_text
from pcapsense.errors import PcapsenseError
from pcapsense.output.jsondoc import dumps

SCHEMA_VERSION = 1
OK, PARTIAL, FAILED = "ok", "partial", "failed"
UNCHANGED = "unchanged"  # an outcome only: the content hash matched, the catalogued analysis stands
BUSY_TIMEOUT_MS = 60_000  # a second scan writing the same catalog waits for our commit instead of failing

SCHEMA = f"""
CREATE TABLE captures (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime REAL,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('{OK}', '{PARTIAL}', '{FAILED}')),
    error TEXT,
    packets INTEGER,
    duration_s REAL,
    first_ts REAL,
    last_ts REAL,
    elapsed_s REAL,
    analyzer_version TEXT NOT NULL,
    analyzed_at TEXT NOT NULL
);
CREATE TABLE findings (
    id INTEGER PRIMARY KEY,
    capture_id INTEGER NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    detector TEXT NOT NULL,
    layer TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    window_start REAL,
    window_end REAL,
    hosts TEXT NOT NULL,
    evidence TEXT NOT NULL,
    display_filter TEXT,
    remedy TEXT,
    owner TEXT,
    caveats TEXT NOT NULL,
    UNIQUE (capture_id, ordinal)
);
CREATE INDEX findings_detector ON findings (detector);
CREATE INDEX findings_window ON findings (window_start);
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Capture facts an outcome carries, in column order (besides `path` and `analyzed_at`).
FACTS = ("size", "mtime", "sha256", "status", "error", "packets", "duration_s", "first_ts", "last_ts", "elapsed_s",
         "analyzer_version")
UPSERT = (f"INSERT INTO captures (path, {', '.join(FACTS)}, analyzed_at) VALUES (?{', ?' * len(FACTS)}, ?) "
          f"ON CONFLICT (path) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in (*FACTS, 'analyzed_at'))} "
          "RETURNING id")
INSERT_FINDING = ("INSERT INTO findings (capture_id, ordinal, detector, layer, severity, title, summary, window_start, "
                  "window_end, hosts, evidence, display_filter, remedy, owner, caveats) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
JSON_COLUMNS = ("hosts", "evidence", "caveats")
SELECT_FINDINGS = ("SELECT c.path, c.sha256, c.analyzer_version, c.analyzed_at, f.* "
                   "FROM findings f JOIN captures c ON c.id = f.capture_id")
FINDING_ORDER = " ORDER BY COALESCE(f.window_start, c.first_ts), c.path, f.ordinal"


class Outcome(TypedDict):
    """What one capture's analysis produced: plain data, the only thing that crosses back from a worker."""

    key: str
    size: int | None
    mtime: float | None
    sha256: str | None
    status: str  # ok | partial | failed | unchanged
    error: str | None  # one line: why it failed, or where a partial analysis stopped
    packets: int | None
    duration_s: float | None  # capture time span, last_ts - first_ts
    first_ts: float | None
    last_ts: float | None
    elapsed_s: float | None  # analysis wall time
    analyzer_version: str
    findings: list[dict[str, Any]]  # Finding.to_dict() documents


def new_outcome(key: str, status: str, version: str, **facts: Any) -> Outcome:
    """An outcome whose facts are unknown except those given."""
    return cast(Outcome, {**dict.fromkeys(FACTS), "findings": [], **facts, "key": key, "status": status,
                          "analyzer_version": version})


def one_line(text: str) -> str:
    """Printable single-line text, whole; undecodable file-name bytes become `\\xNN` (sqlite3 refuses surrogates)."""
    return safe_text(text, limit=len(text))


def iso_utc(ts: float | None) -> str | None:
    """Catalog times are epoch seconds; people and SIEMs read ISO 8601 UTC."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def analyzer_version(version: str, detector_ids: Collection[str]) -> str:
    """pcapsense's version plus a digest of the detectors that ran: installing a detector invalidates old entries."""
    return f"{version}+{hashlib.sha256(','.join(sorted(detector_ids)).encode()).hexdigest()[:8]}"


def dump_json(value: Any) -> str:
    """Compact JSON text of analysis data for a catalog column."""
    return dumps(value, indent=None)


@dataclass(frozen=True)
class Prior:
    """What the catalog remembers of a capture: enough to decide whether to analyse it again."""

    size: int | None
    mtime: float | None
    sha256: str | None
    status: str
    analyzer_version: str

    def reusable_hash(self, version: str, has_report: bool) -> str | None:
        """The catalogued content hash when that analysis can stand for identical content, else None.

        Not when another analyzer version produced it, nor when no hash was taken (the file could not be read,
        or its worker died: worth another try), nor when an analysed capture's report is missing from the
        output directory (analysing again is what writes it).
        """
        current = self.analyzer_version == version and (has_report or self.status == FAILED)
        return self.sha256 if current else None

    def same_stat(self, size: int, mtime: float) -> bool:
        return (self.size, self.mtime) == (size, mtime)


def _finding_row(capture_id: int, ordinal: int, finding: dict[str, Any]) -> tuple[Any, ...]:
    evidence = finding["evidence"]
    start, end = (float(t) for t in evidence["window"]) if evidence.get("window") else (None, None)
    return (capture_id, ordinal, finding["detector"], finding["layer"], finding["severity"], finding["title"],
            finding["summary"], start, end, dump_json(evidence["hosts"]), dump_json(evidence), finding.get("filter"),
            finding.get("remedy"), finding.get("owner"), dump_json(finding.get("caveats", [])))


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for column in JSON_COLUMNS:
        data[column] = json.loads(data[column])
    return data


@dataclass(frozen=True)
class FindingQuery:
    """Filters of `pcapsense findings`; empty means no filter on that column."""

    detectors: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    since: float | None = None  # findings whose window (else the capture's span) ends at or after this epoch time

    def where(self) -> tuple[str, list[Any]]:
        columns = (("f.detector", self.detectors), ("f.layer", self.layers), ("f.severity", self.severities))
        clauses = [f"{col} IN ({', '.join('?' * len(values))})" for col, values in columns if values]
        params: list[Any] = [v for _, values in columns for v in values]
        if self.since is not None:
            clauses.append("COALESCE(f.window_end, c.last_ts) >= ?")
            params.append(self.since)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class Catalog:
    """The SQLite catalog. Open it with `create=True` to scan into it, `create=False` to query an existing one."""

    def __init__(self, path: Path, *, create: bool) -> None:
        if not create and not path.is_file():
            raise PcapsenseError(f"{path}: no catalog here (run `pcapsense scan` first, or pass --catalog)")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._check_schema(path)
        except (OSError, sqlite3.Error) as exc:
            raise PcapsenseError(f"{path}: cannot use as a catalog: {exc}") from None

    def _check_schema(self, path: Path) -> None:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version or self.db.execute("SELECT 1 FROM sqlite_master").fetchone():
            raise PcapsenseError(f"{path}: not a pcapsense catalog of schema {SCHEMA_VERSION} "
                                 f"(user_version {version})")
        with self._transaction():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.db.execute(statement)

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[None]:
        """IMMEDIATE takes the write lock up front, so a concurrent writer waits rather than failing mid-way."""
        self.db.execute(f"BEGIN {mode}")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def priors(self) -> dict[str, Prior]:
        rows = self.db.execute("SELECT path, size, mtime, sha256, status, analyzer_version FROM captures")
        return {row["path"]: Prior(*tuple(row)[1:]) for row in rows}

    def record(self, outcome: Outcome) -> None:
        """Commit one capture's outcome and its findings in a single transaction."""
        with self._transaction():
            if outcome["status"] == UNCHANGED:
                self.db.execute("UPDATE captures SET size = ?, mtime = ? WHERE path = ?",
                                (outcome["size"], outcome["mtime"], outcome["key"]))
                return
            now = datetime.now(UTC).isoformat(timespec="seconds")
            (capture_id,) = self.db.execute(UPSERT, (outcome["key"], *(outcome[c] for c in FACTS), now)).fetchone()
            self.db.execute("DELETE FROM findings WHERE capture_id = ?", (capture_id,))
            self.db.executemany(INSERT_FINDING, (_finding_row(capture_id, i, f)
                                                 for i, f in enumerate(outcome["findings"])))

    def findings(self, query: FindingQuery) -> Iterator[dict[str, Any]]:
        """Findings across the catalog matching `query`, in time order, each with its capture's path and hash."""
        where, params = query.where()
        for row in self.db.execute(SELECT_FINDINGS + where + FINDING_ORDER, params):
            yield _decode(row)

    def scan_view(self, keys: Collection[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The catalogued captures among `keys` and their findings: what one scan's fleet index shows."""
        with self._transaction("DEFERRED"):  # writes only the connection's temp database
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS scope (path TEXT PRIMARY KEY)")
            self.db.execute("DELETE FROM temp.scope")
            self.db.executemany("INSERT OR IGNORE INTO temp.scope VALUES (?)", ((k,) for k in keys))
        captures = [dict(r) for r in self.db.execute("SELECT c.* FROM captures c JOIN temp.scope USING (path) "
                                                     "ORDER BY c.path")]
        findings = [_decode(r) for r in self.db.execute(SELECT_FINDINGS + " JOIN temp.scope s ON s.path = c.path"
                                                        + FINDING_ORDER)]
        return captures, findings
