"""Verification results: every `bluegreen verify` (and cutover gate) run is recorded."""

from __future__ import annotations

import json
from typing import Any

import psycopg


def record_verification(conn: psycopg.Connection, report: dict[str, Any]) -> None:
    """Record a verify report (``VerifyReport.as_dict()``) in its own transaction."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO bluegreen.verification (snapshot_lsn, clean, differences, report) "
            "VALUES (%s, %s, %s, %s)",
            (
                report["snapshot_lsn"],
                report["clean"],
                len(report["differences"]) + len(report["unsettled"]),
                json.dumps(report, default=str),
            ),
        )


def last_verification(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The newest result: at, clean, differences, snapshot_lsn; None before the first."""
    row = conn.execute(
        "SELECT at, clean, differences, snapshot_lsn FROM bluegreen.verification "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"at": row[0], "clean": row[1], "differences": row[2], "snapshot_lsn": row[3]}
