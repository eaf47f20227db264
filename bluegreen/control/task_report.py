"""Reading the snapshot task queue: counts by state, last errors, attempt history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bluegreen.control.tasks import State


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


def task_counts(conn: psycopg.Connection, errors: int = 5) -> TaskCounts:
    """Tasks by state, rows produced by completed tasks, and the last `errors` errors."""
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


def task_attempts(conn: psycopg.Connection, task_id: int | None = None) -> list[dict[str, Any]]:
    """The attempt history, oldest first (of one task, or of all)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM bluegreen.snapshot_task_attempt "
            "WHERE %(task)s::bigint IS NULL OR task_id = %(task)s ORDER BY id",
            {"task": task_id},
        ).fetchall()


def task_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every task row as it stands, by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM bluegreen.snapshot_task ORDER BY id").fetchall()


def produce_seconds(conn: psycopg.Connection) -> float | None:
    """Seconds from the first task started to the last finished (what the bench times)."""
    row = conn.execute(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM bluegreen.snapshot_task"
    ).fetchone()
    return float(row[0]) if row and row[0] else None
