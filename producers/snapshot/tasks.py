"""The snapshot task queue in the control database.

Tasks are claimed with ``FOR UPDATE SKIP LOCKED`` so any number of workers, on
any number of machines sharing the control database, take distinct tasks. A
worker proves it is alive with heartbeats; a task whose heartbeat expired is
claimed again. Every state change checks the claim (worker and attempt), so a
worker that lost its task cannot complete it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bluegreen.config import SnapshotSettings
from producers.snapshot.planner import ranges


class State(StrEnum):
    READY = "READY"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    DEAD = "DEAD"


SCHEMA_SQL = """
SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'));
CREATE SCHEMA IF NOT EXISTS bluegreen;
CREATE TABLE IF NOT EXISTS bluegreen.snapshot_plan (
    source_table text PRIMARY KEY,
    chunk_size integer NOT NULL,
    tasks integer NOT NULL,
    planned_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bluegreen.snapshot_task (
    id bigserial PRIMARY KEY,
    source_table text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('range', 'keys')),
    lo bigint,
    hi bigint,
    keys jsonb,
    state text NOT NULL DEFAULT 'READY'
        CHECK (state IN ('READY', 'IN_PROGRESS', 'COMPLETED', 'ERROR', 'DEAD')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    worker_id text,
    heartbeat_at timestamptz,
    not_before timestamptz NOT NULL DEFAULT now(),
    rows bigint NOT NULL DEFAULT 0,
    produce_errors bigint NOT NULL DEFAULT 0,
    snapshot_lsn bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    CHECK ((kind = 'range' AND lo IS NOT NULL) OR (kind = 'keys' AND keys IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS snapshot_task_range_key
    ON bluegreen.snapshot_task (source_table, lo) WHERE kind = 'range';
CREATE INDEX IF NOT EXISTS snapshot_task_claim_idx
    ON bluegreen.snapshot_task (state, not_before);
"""


@dataclass(frozen=True)
class Task:
    id: int
    source_table: str
    kind: str
    lo: int | None
    hi: int | None
    keys: list[list[str]] | None
    attempts: int

    @property
    def label(self) -> str:
        if self.kind == "keys":
            return f"task {self.id} ({len(self.keys or [])} keys)"
        return f"task {self.id} [{self.lo}, {self.hi if self.hi is not None else '∞'})"


@dataclass(frozen=True)
class TaskCounts:
    by_state: dict[str, int]
    rows: int
    produce_errors: int
    last_errors: list[tuple[int, str, str, int]]  # id, state, error, attempts

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def open(self) -> int:
        return sum(self.by_state.get(s, 0) for s in (State.READY, State.IN_PROGRESS, State.ERROR))


def ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_SQL)


def plan_ranges(
    conn: psycopg.Connection, source_table: str, starts: Sequence[int], chunk_size: int
) -> tuple[int, bool]:
    """Record range tasks once per table; return (task count, whether this call planned)."""
    with conn.transaction():
        planned = conn.execute(
            "INSERT INTO bluegreen.snapshot_plan (source_table, chunk_size, tasks) "
            "VALUES (%s, %s, 0) ON CONFLICT (source_table) DO NOTHING RETURNING source_table",
            (source_table, chunk_size),
        ).fetchone()
        if planned is None:
            row = conn.execute(
                "SELECT tasks FROM bluegreen.snapshot_plan WHERE source_table = %s",
                (source_table,),
            ).fetchone()
            return (int(row[0]) if row else 0), False
        bounds = ranges(starts)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bluegreen.snapshot_task (source_table, kind, lo, hi) "
                "VALUES (%s, 'range', %s, %s)",
                [(source_table, lo, hi) for lo, hi in bounds],
            )
        conn.execute(
            "UPDATE bluegreen.snapshot_plan SET tasks = %s WHERE source_table = %s",
            (len(bounds), source_table),
        )
    return len(bounds), True


def add_key_task(conn: psycopg.Connection, source_table: str, keys: Sequence[Sequence[str]]) -> int:
    """Queue a re-snapshot of exactly these natural keys (verification's repair)."""
    row = conn.execute(
        "INSERT INTO bluegreen.snapshot_task (source_table, kind, keys) "
        "VALUES (%s, 'keys', %s) RETURNING id",
        (source_table, json.dumps([list(k) for k in keys])),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


class TaskQueue:
    """One worker's view of the queue (its own connection, autocommit)."""

    def __init__(self, conn: psycopg.Connection, worker_id: str, settings: SnapshotSettings):
        self.conn = conn
        self.worker_id = worker_id
        self.settings = settings

    def claim(self) -> Task | None:
        """Take the oldest claimable task: READY, ERROR past its backoff, or abandoned."""
        timeout = self.settings.heartbeat_timeout_s
        with self.conn.transaction():
            # An abandoned task that already used every attempt is dead, not retried.
            self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET state = 'DEAD', worker_id = NULL, "
                "last_error = coalesce(last_error || E'\\n', '') || "
                "  format('worker %%s stopped heartbeating (attempt %%s of %%s)', "
                "         worker_id, attempts, %(max)s::int) "
                "WHERE state = 'IN_PROGRESS' AND attempts >= %(max)s "
                "AND heartbeat_at < now() - make_interval(secs => %(timeout)s)",
                {"max": self.settings.max_attempts, "timeout": timeout},
            )
            row = self.conn.execute(
                "UPDATE bluegreen.snapshot_task t SET state = 'IN_PROGRESS', "
                "worker_id = %(worker)s, attempts = t.attempts + 1, heartbeat_at = now(), "
                "started_at = now() "
                "FROM (SELECT id FROM bluegreen.snapshot_task "
                "      WHERE (state IN ('READY', 'ERROR') AND not_before <= now()) "
                "         OR (state = 'IN_PROGRESS' "
                "             AND heartbeat_at < now() - make_interval(secs => %(timeout)s)) "
                "      ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) claimable "
                "WHERE t.id = claimable.id "
                "RETURNING t.id, t.source_table, t.kind, t.lo, t.hi, t.keys, t.attempts",
                {"worker": self.worker_id, "timeout": timeout},
            ).fetchone()
        if row is None:
            return None
        return Task(*row)

    def heartbeat(self, task_ids: Sequence[int]) -> None:
        if task_ids:
            self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET heartbeat_at = now() "
                "WHERE id = ANY(%s) AND worker_id = %s AND state = 'IN_PROGRESS'",
                (list(task_ids), self.worker_id),
            )

    def complete(self, task: Task, rows: int, snapshot_lsn: int) -> bool:
        """Mark COMPLETED; False when this worker no longer held the task."""
        cur = self.conn.execute(
            "UPDATE bluegreen.snapshot_task SET state = 'COMPLETED', rows = %s, "
            "snapshot_lsn = %s, finished_at = now() "
            "WHERE id = %s AND worker_id = %s AND attempts = %s AND state = 'IN_PROGRESS'",
            (rows, snapshot_lsn, task.id, self.worker_id, task.attempts),
        )
        return cur.rowcount == 1

    def fail(self, task: Task, error: str, produce_errors: int = 0) -> State:
        """Record a failed attempt: ERROR with exponential backoff, or DEAD when out of attempts."""
        base, cap = self.settings.backoff_base_s, self.settings.backoff_max_s
        row = self.conn.execute(
            "UPDATE bluegreen.snapshot_task SET "
            "state = CASE WHEN attempts >= %(max)s THEN 'DEAD' ELSE 'ERROR' END, "
            "last_error = %(error)s, worker_id = NULL, finished_at = now(), "
            "produce_errors = produce_errors + %(produce_errors)s, "
            "not_before = now() + "
            "  make_interval(secs => least(%(cap)s, %(base)s * 2 ^ (attempts - 1))) "
            "WHERE id = %(id)s AND worker_id = %(worker)s AND attempts = %(attempts)s "
            "AND state = 'IN_PROGRESS' RETURNING state",
            {
                "max": self.settings.max_attempts,
                "error": error[:4000],
                "cap": cap,
                "base": base,
                "id": task.id,
                "worker": self.worker_id,
                "attempts": task.attempts,
                "produce_errors": produce_errors,
            },
        ).fetchone()
        return State(row[0]) if row else State.IN_PROGRESS

    def release(self, task: Task) -> None:
        """Give back a task on a clean shutdown; the attempt does not count."""
        self.conn.execute(
            "UPDATE bluegreen.snapshot_task SET state = 'READY', attempts = attempts - 1, "
            "worker_id = NULL, heartbeat_at = NULL "
            "WHERE id = %s AND worker_id = %s AND attempts = %s AND state = 'IN_PROGRESS'",
            (task.id, self.worker_id, task.attempts),
        )


def counts(conn: psycopg.Connection, errors: int = 5) -> TaskCounts:
    by_state = {
        state: int(n)
        for state, n in conn.execute(
            "SELECT state, count(*) FROM bluegreen.snapshot_task GROUP BY state"
        ).fetchall()
    }
    totals = conn.execute(
        "SELECT coalesce(sum(rows) FILTER (WHERE state = 'COMPLETED'), 0), "
        "coalesce(sum(produce_errors), 0) FROM bluegreen.snapshot_task"
    ).fetchone()
    last = conn.execute(
        "SELECT id, state, last_error, attempts FROM bluegreen.snapshot_task "
        "WHERE last_error IS NOT NULL AND state <> 'COMPLETED' "
        "ORDER BY finished_at DESC NULLS LAST LIMIT %s",
        (errors,),
    ).fetchall()
    return TaskCounts(
        by_state=by_state,
        rows=int(totals[0]) if totals else 0,
        produce_errors=int(totals[1]) if totals else 0,
        last_errors=[(int(i), s, e, int(a)) for i, s, e, a in last],
    )


def retry_dead(conn: psycopg.Connection) -> int:
    """Put DEAD tasks back to READY with fresh attempts (after the cause was fixed)."""
    cur = conn.execute(
        "UPDATE bluegreen.snapshot_task SET state = 'READY', attempts = 0, worker_id = NULL, "
        "not_before = now() WHERE state = 'DEAD'"
    )
    conn.commit()
    return cur.rowcount


def task_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM bluegreen.snapshot_task ORDER BY id").fetchall()


def in_progress_since(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute(
        "SELECT min(started_at) FROM bluegreen.snapshot_task WHERE started_at IS NOT NULL"
    ).fetchone()
    return row[0] if row else None
