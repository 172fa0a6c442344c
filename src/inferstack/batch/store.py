"""Durable state of the batch service: SQLite (stdlib ``sqlite3``) plus files on disk.

Layout of ``state_dir``::

    batch.sqlite3          files, batches and one row per request line
    files/<file id>        uploaded input files and finalized output / error files

Invariants (what makes a SIGKILL at any instant harmless):

- An upload is written to ``files/.tmp-*``, fsynced, renamed into place, and only then
  registered; a crash leaves at most an unregistered temp file.
- A line's result is recorded in one transaction that also updates the batch's counters, and only
  while the line is still ``pending`` (``UPDATE ... WHERE state='pending'``): each line gets exactly
  one result row, however often it was sent. Lines in flight when the process died are still
  ``pending`` and are sent again after a restart (at-least-once to the backend, exactly-once in the
  output).
- Finalizing writes the output and error files (named after the batch, so a retry overwrites
  them), then registers them and sets the final status in one transaction; a crash in between
  leaves the batch ``finalizing`` and the next start finalizes it again.

The SQLite database is the one piece to replace with a server database (PostgreSQL, Cloud SQL)
when several batch-service pods must share the state: every query lives in this module.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.batch.jsonl import LineError, ParsedLine
from inferstack.wire import BATCH_ACTIVE_STATUSES, BATCH_TERMINAL_STATUSES, BatchStatus

__all__ = ["ACTIVE_STATUSES", "BatchStore", "PendingLine", "TERMINAL_STATUSES"]

ACTIVE_STATUSES = tuple(s.value for s in BATCH_ACTIVE_STATUSES)
TERMINAL_STATUSES = tuple(s.value for s in BATCH_TERMINAL_STATUSES)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    expired_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    model TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tenant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,                             -- the output/error file line, JSON
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX IF NOT EXISTS lines_pending ON lines (batch_id, state, idx);
"""
# columns added after the first schema: a state dir from an older version gains them on open
_ADDED_COLUMNS = {"files": ("tenant TEXT NOT NULL DEFAULT ''",), "batches": ("tenant TEXT NOT NULL DEFAULT ''",)}


@dataclass(frozen=True)
class PendingLine:
    batch_id: str
    idx: int
    custom_id: str
    url: str
    body: dict[str, Any]
    attempts: int
    tenant: str = ""  # whose batch: the line is sent as theirs

    @property
    def key(self) -> tuple[str, int]:
        return (self.batch_id, self.idx)


def _now() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class BatchStore:
    """All reads and writes of the batch service's state; safe to share between threads."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.state_dir / "batch.sqlite3"
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # WAL + NORMAL: a committed transaction survives a killed process (not a power cut).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            have = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ----- files ----------------------------------------------------------------------------
    def temp_path(self) -> Path:
        return self.files_dir / f".tmp-{uuid.uuid4().hex}"

    # Every read and change of a file or batch takes ``tenant``: the owner the caller acts for (only
    # that owner's objects exist for it), or None for the service itself (all of them).
    def add_file(self, temp: Path, filename: str, purpose: str, tenant: str = "") -> dict[str, Any]:
        """Register an uploaded file (written to ``temp`` by the caller); returns the File object."""
        file_id = new_id("file-")
        path = self.files_dir / file_id
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, path)
        size = path.stat().st_size
        with self._tx() as db:
            db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, path, tenant) "
                       "VALUES (?,?,?,?,?,?,?)", (file_id, filename, purpose, size, _now(), str(path), tenant))
        return self.get_file(file_id)  # type: ignore[return-value]

    def get_file(self, file_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        owned, args = _owned_by(tenant)
        row = self._one(f"SELECT * FROM files WHERE id = ?{owned}", (file_id, *args))
        return _file_object(row) if row else None

    def file_path(self, file_id: str, tenant: str | None = None) -> Path | None:
        owned, args = _owned_by(tenant)
        row = self._one(f"SELECT path FROM files WHERE id = ?{owned}", (file_id, *args))
        return Path(row["path"]) if row else None

    def list_files(self, purpose: str | None = None, limit: int = 10_000,
                   tenant: str | None = None) -> list[dict[str, Any]]:
        owned, args = _owned_by(tenant)
        if purpose:
            rows = self._all(f"SELECT * FROM files WHERE purpose = ?{owned} ORDER BY created_at DESC, rowid DESC "
                             "LIMIT ?", (purpose, *args, limit))
        else:
            rows = self._all(f"SELECT * FROM files WHERE 1{owned} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                             (*args, limit))
        return [_file_object(r) for r in rows]

    def delete_file(self, file_id: str, tenant: str | None = None) -> bool:
        path = self.file_path(file_id, tenant)
        if path is None:
            return False
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        path.unlink(missing_ok=True)
        return True

    # ----- batches --------------------------------------------------------------------------
    def create_batch(self, input_file_id: str, endpoint: str, completion_window: str,
                     metadata: dict[str, str] | None = None, window_s: int = 24 * 3600,
                     tenant: str = "") -> dict[str, Any]:
        batch_id = new_id("batch_")
        now = _now()
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0]
            db.execute(
                "INSERT INTO batches (id, seq, endpoint, input_file_id, completion_window, status, created_at, "
                "expires_at, metadata, tenant) VALUES (?,?,?,?,?,'validating',?,?,?,?)",
                (batch_id, seq, endpoint, input_file_id, completion_window, now, now + window_s,
                 json.dumps(metadata) if metadata is not None else None, tenant))
        return self.get_batch(batch_id)  # type: ignore[return-value]

    def get_batch(self, batch_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        owned, args = _owned_by(tenant)
        row = self._one(f"SELECT * FROM batches WHERE id = ?{owned}", (batch_id, *args))
        return _batch_object(row) if row else None

    def count_by_status(self) -> dict[str, int]:
        """Batches per status, every status listed (0 for none): the service's /metrics."""
        counts = {status.value: 0 for status in BatchStatus}
        for row in self._all("SELECT status, COUNT(*) AS n FROM batches GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def list_batches(self, limit: int = 20, after: str | None = None,
                     tenant: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; ``after`` is the id of the last batch of the previous page."""
        owned, args = _owned_by(tenant)
        top = None
        if after:
            anchor = self._one(f"SELECT seq FROM batches WHERE id = ?{owned}", (after, *args))
            top = anchor["seq"] if anchor else 0
        rows = self._all(f"SELECT * FROM batches WHERE seq < ?{owned} ORDER BY seq DESC LIMIT ?",
                         (top if top is not None else 2**62, *args, limit + 1))
        return [_batch_object(r) for r in rows[:limit]], len(rows) > limit

    def active_batches(self) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(ACTIVE_STATUSES))
        rows = self._all(f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY seq", ACTIVE_STATUSES)
        return [_batch_object(r) for r in rows]

    def request_cancel(self, batch_id: str) -> dict[str, Any] | None:
        """validating/in_progress -> cancelling; other statuses are left as they are."""
        with self._tx() as db:
            db.execute("UPDATE batches SET status = 'cancelling', cancelling_at = ? "
                       "WHERE id = ? AND status IN ('validating', 'in_progress')", (_now(), batch_id))
        return self.get_batch(batch_id)

    def start_batch(self, batch_id: str, lines: list[ParsedLine]) -> bool:
        """validating -> in_progress with its lines, in one transaction; False if no longer validating."""
        model = next((ln.body.get("model") for ln in lines), None)
        with self._tx() as db:
            cur = db.execute("UPDATE batches SET status = 'in_progress', in_progress_at = ?, total = ?, model = ? "
                             "WHERE id = ? AND status = 'validating'", (_now(), len(lines), model, batch_id))
            if cur.rowcount != 1:
                return False
            db.executemany("INSERT INTO lines (batch_id, idx, custom_id, url, body) VALUES (?,?,?,?,?)",
                           [(batch_id, ln.index, ln.custom_id, ln.url, json.dumps(ln.body)) for ln in lines])
        return True

    def fail_batch(self, batch_id: str, errors: list[LineError]) -> None:
        payload = json.dumps({"object": "list", "data": [e.as_dict() for e in errors]})
        with self._tx() as db:
            db.execute("UPDATE batches SET status = 'failed', failed_at = ?, errors = ? WHERE id = ? "
                       "AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling')",
                       (_now(), payload, batch_id))

    # ----- lines ----------------------------------------------------------------------------
    def next_lines(self, limit: int, exclude: set[tuple[str, int]]) -> list[PendingLine]:
        """Up to ``limit`` pending lines of in-progress batches, oldest batch first, skipping
        ``exclude`` (the lines in flight now)."""
        if limit <= 0:
            return []
        rows = self._all(
            "SELECT l.batch_id, l.idx, l.custom_id, l.url, l.body, l.attempts, b.tenant FROM lines l "
            "JOIN batches b ON b.id = l.batch_id WHERE b.status = 'in_progress' AND l.state = 'pending' "
            "ORDER BY b.seq, l.idx LIMIT ?", (limit + len(exclude),))
        out = []
        for r in rows:
            if (r["batch_id"], r["idx"]) in exclude:
                continue
            out.append(PendingLine(r["batch_id"], r["idx"], r["custom_id"], r["url"], json.loads(r["body"]),
                                   r["attempts"], r["tenant"]))
            if len(out) >= limit:
                break
        return out

    def pending_count(self, batch_id: str) -> int:
        row = self._one("SELECT COUNT(*) FROM lines WHERE batch_id = ? AND state = 'pending'", (batch_id,))
        return int(row[0]) if row else 0

    def add_attempt(self, batch_id: str, idx: int) -> int:
        with self._tx() as db:
            db.execute("UPDATE lines SET attempts = attempts + 1 WHERE batch_id = ? AND idx = ?", (batch_id, idx))
            row = db.execute("SELECT attempts FROM lines WHERE batch_id = ? AND idx = ?", (batch_id, idx)).fetchone()
        return int(row[0]) if row else 0

    def record_result(self, batch_id: str, idx: int, result: dict[str, Any], ok: bool,
                      usage: dict[str, Any] | None = None) -> bool:
        """Store a line's output (``ok``) or error line, once: False if it already had one."""
        usage = usage or {}
        with self._tx() as db:
            cur = db.execute("UPDATE lines SET state = ?, result = ? WHERE batch_id = ? AND idx = ? "
                             "AND state = 'pending'", ("done" if ok else "failed", json.dumps(result), batch_id, idx))
            if cur.rowcount != 1:
                return False
            column = "completed" if ok else "failed"
            db.execute(f"UPDATE batches SET {column} = {column} + 1, input_tokens = input_tokens + ?, "
                       "output_tokens = output_tokens + ? WHERE id = ?",
                       (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), batch_id))
        return True

    def results(self, batch_id: str, state: str) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT result FROM lines WHERE batch_id = ? AND state = ? ORDER BY idx",
                                    (batch_id, state)).fetchall()
        for row in rows:
            yield row[0]

    # ----- finalizing -----------------------------------------------------------------------
    def mark_finalizing(self, batch_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE batches SET status = 'finalizing', finalizing_at = ? WHERE id = ? "
                       "AND status = 'in_progress'", (_now(), batch_id))

    def finalize(self, batch_id: str, final_status: str, expired_error: dict[str, Any] | None = None) -> None:
        """Write the output/error files and set ``final_status`` (completed, cancelled, expired).

        With ``expired_error`` the still-pending lines get that error in the error file first."""
        if expired_error is not None:
            for line in self._all("SELECT idx, custom_id FROM lines WHERE batch_id = ? AND state = 'pending'",
                                  (batch_id,)):
                self.record_result(batch_id, line["idx"], {
                    "id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": None,
                    "error": expired_error}, ok=False)
        file_ids: dict[str, str | None] = {}
        for state, kind in (("done", "output"), ("failed", "error")):
            path = self.files_dir / f"{batch_id}_{kind}.jsonl"
            count = self._write_lines(path, self.results(batch_id, state))
            empty = count == 0 and (kind == "error" or final_status != "completed")
            file_ids[kind] = None if empty else path.name
        now = _now()
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[final_status]
        with self._tx() as db:
            row = db.execute("SELECT status, output_file_id, error_file_id, tenant FROM batches WHERE id = ?",
                             (batch_id,)).fetchone()
            if row is None or row["status"] in TERMINAL_STATUSES:
                return
            ids: dict[str, str | None] = {}
            for kind, name in file_ids.items():
                if name is None:
                    ids[kind] = None
                    continue
                existing = row[f"{kind}_file_id"]
                file_id = existing or new_id("file-")
                path = self.files_dir / name
                db.execute("INSERT OR REPLACE INTO files (id, filename, purpose, bytes, created_at, path, tenant) "
                           "VALUES (?,?,?,?,?,?,?)", (file_id, name, "batch_output", path.stat().st_size, now,
                                                      str(path), row["tenant"]))
                ids[kind] = file_id
            db.execute(f"UPDATE batches SET status = ?, {stamp} = ?, output_file_id = ?, error_file_id = ?, "
                       "finalizing_at = COALESCE(finalizing_at, ?) WHERE id = ?",
                       (final_status, now, ids["output"], ids["error"], now, batch_id))

    @staticmethod
    def _write_lines(path: Path, lines: Iterator[str]) -> int:
        tmp = path.with_name(f".tmp-{path.name}")
        count = 0
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return count


def _owned_by(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its argument) keeping a tenant's own rows; none for the service."""
    return ("", ()) if tenant is None else (" AND tenant = ?", (tenant,))


def _file_object(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed",
            "expires_at": None, "status_details": None}


def _batch_object(row: sqlite3.Row) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": row["id"], "object": "batch"}
    for key in ("endpoint", "input_file_id", "completion_window", "status", "output_file_id", "error_file_id",
                "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
                "expired_at", "cancelling_at", "cancelled_at", "model"):
        obj[key] = row[key]
    obj["errors"] = json.loads(row["errors"]) if row["errors"] else None
    obj["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
    obj["request_counts"] = {"total": row["total"], "completed": row["completed"], "failed": row["failed"]}
    obj["usage"] = {
        "input_tokens": row["input_tokens"], "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": row["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": row["input_tokens"] + row["output_tokens"]}
    return obj
