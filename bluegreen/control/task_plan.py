"""Filling the snapshot task queue: range tasks planned once per table, key tasks for a
repair, DEAD tasks put back after their cause was fixed."""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg

from bluegreen.control.planner import ranges


def planned_tasks(conn: psycopg.Connection, source_table: str) -> int | None:
    """How many range tasks the table was planned into; None when it never was."""
    row = conn.execute(
        "SELECT tasks FROM bluegreen.snapshot_plan WHERE source_table = %s",
        (source_table,),
    ).fetchone()
    return None if row is None else int(row[0])


def plan_ranges(
    conn: psycopg.Connection, source_table: str, starts: Sequence[int], chunk_size: int
) -> tuple[int, bool]:
    """Record range tasks once per table; return (task count, whether this call planned).

    The plan row is claimed first (``ON CONFLICT DO NOTHING``), in the same transaction
    as the tasks: of two commands planning at once, exactly one inserts tasks.
    """
    with conn.transaction():
        planned = conn.execute(
            "INSERT INTO bluegreen.snapshot_plan (source_table, chunk_size, tasks) "
            "VALUES (%s, %s, 0) ON CONFLICT (source_table) DO NOTHING RETURNING source_table",
            (source_table, chunk_size),
        ).fetchone()
        if planned is None:
            return planned_tasks(conn, source_table) or 0, False
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


def retry_dead(conn: psycopg.Connection) -> int:
    """Put DEAD tasks back to READY with fresh attempts (after the cause was fixed)."""
    cur = conn.execute(
        "UPDATE bluegreen.snapshot_task SET state = 'READY', attempts = 0, worker_id = NULL, "
        "not_before = now() WHERE state = 'DEAD'"
    )
    conn.commit()
    return cur.rowcount
