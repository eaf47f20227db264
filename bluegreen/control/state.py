"""The migration's durable state in the control database: phase, read router, audit.

The phase moves through a fixed set of transitions; every transition, and every
switch of the read router, is written with who or what caused it and why, in the
same transaction as the change itself.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg

from bluegreen.core.errors import BluegreenError

ROUTER_CHANNEL = "bluegreen_router"


class Phase(StrEnum):
    PLANNED = "planned"
    SNAPSHOTTING = "snapshotting"
    CATCHING_UP = "catching-up"
    IN_SYNC = "in-sync"
    READS_ON_GREEN = "reads-on-green"
    ROLLED_BACK = "rolled-back"
    COMPLETED = "completed"


# phase -> the phases it may move to
TRANSITIONS: dict[Phase, set[Phase]] = {
    Phase.PLANNED: {Phase.SNAPSHOTTING},
    Phase.SNAPSHOTTING: {Phase.CATCHING_UP},
    Phase.CATCHING_UP: {Phase.IN_SYNC, Phase.SNAPSHOTTING},
    Phase.IN_SYNC: {Phase.READS_ON_GREEN, Phase.CATCHING_UP, Phase.SNAPSHOTTING},
    Phase.READS_ON_GREEN: {Phase.ROLLED_BACK, Phase.COMPLETED},
    Phase.ROLLED_BACK: {Phase.READS_ON_GREEN, Phase.IN_SYNC, Phase.CATCHING_UP, Phase.SNAPSHOTTING},
    Phase.COMPLETED: set(),
}

SCHEMA_SQL = """
SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'));
CREATE SCHEMA IF NOT EXISTS bluegreen;
CREATE TABLE IF NOT EXISTS bluegreen.migration (
    id integer PRIMARY KEY CHECK (id = 1),
    phase text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO bluegreen.migration (id, phase) VALUES (1, 'planned') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS bluegreen.read_router (
    id integer PRIMARY KEY CHECK (id = 1),
    color text NOT NULL CHECK (color IN ('blue', 'green')),
    epoch bigint NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now(),
    switched_by text NOT NULL
);
INSERT INTO bluegreen.read_router (id, color, epoch, switched_by)
VALUES (1, 'blue', 0, 'initial') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS bluegreen.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    from_phase text,
    to_phase text,
    reason text,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS bluegreen.verification (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    snapshot_lsn bigint NOT NULL,
    clean boolean NOT NULL,
    differences integer NOT NULL,
    report jsonb NOT NULL
);
"""


def actor() -> str:
    """Who is acting: user@host (pid), for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


@dataclass(frozen=True)
class Router:
    color: str
    epoch: int
    switched_at: datetime
    switched_by: str


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    from_phase: str | None
    to_phase: str | None
    reason: str | None
    details: dict[str, Any]


class IllegalTransitionError(BluegreenError):
    """The migration cannot move from its phase to the one asked for."""


def ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_SQL)
    conn.commit()


def phase(conn: psycopg.Connection) -> Phase:
    row = conn.execute("SELECT phase FROM bluegreen.migration WHERE id = 1").fetchone()
    return Phase(row[0]) if row else Phase.PLANNED


def transition(
    conn: psycopg.Connection,
    to: Phase,
    *,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    by: str | None = None,
    strict: bool = True,
) -> Phase:
    """Move to `to` (and audit it) in one transaction; return the phase it came from.

    With strict=False an impossible transition is skipped silently (services nudging
    the phase forward, e.g. a snapshot started again after a rollback).
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT phase FROM bluegreen.migration WHERE id = 1 FOR UPDATE"
        ).fetchone()
        current = Phase(row[0]) if row else Phase.PLANNED
        if current == to:
            return current
        if to not in TRANSITIONS[current]:
            if strict:
                allowed = ", ".join(sorted(p.value for p in TRANSITIONS[current])) or "none"
                raise IllegalTransitionError(
                    f"the migration is {current.value}; it cannot move to {to.value} "
                    f"(allowed: {allowed})"
                )
            return current
        conn.execute(
            "UPDATE bluegreen.migration SET phase = %s, updated_at = now() WHERE id = 1",
            (to.value,),
        )
        _audit(conn, by or actor(), action, current.value, to.value, reason=reason, details=details)
    return current


def audit(
    conn: psycopg.Connection,
    action: str,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    by: str | None = None,
) -> None:
    with conn.transaction():
        current = phase(conn)
        _audit(conn, by or actor(), action, current.value, None, reason=reason, details=details)


def _audit(
    conn: psycopg.Connection,
    who: str,
    action: str,
    from_phase: str | None,
    to_phase: str | None,
    *,
    reason: str | None,
    details: dict[str, Any] | None,
) -> None:
    conn.execute(
        "INSERT INTO bluegreen.audit (actor, action, from_phase, to_phase, reason, details) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (who, action, from_phase, to_phase, reason, json.dumps(details or {}, default=str)),
    )


def router(conn: psycopg.Connection) -> Router:
    row = conn.execute(
        "SELECT color, epoch, switched_at, switched_by FROM bluegreen.read_router WHERE id = 1"
    ).fetchone()
    if row is None:
        raise BluegreenError("the read router is not initialised: run any bluegreen command first")
    return Router(*row)


def switch_reads(
    conn: psycopg.Connection,
    color: str,
    *,
    to_phase: Phase,
    action: str,
    reason: str | None,
    details: dict[str, Any] | None = None,
    force: bool = False,
) -> Router:
    """Flip the router and the phase together, audited; NOTIFY clients on commit.

    force: an operator's override (with a reason) may leave the phase's usual path.
    """
    who = actor()
    with conn.transaction():
        row = conn.execute(
            "SELECT phase FROM bluegreen.migration WHERE id = 1 FOR UPDATE"
        ).fetchone()
        current = Phase(row[0]) if row else Phase.PLANNED
        if to_phase != current and to_phase not in TRANSITIONS[current] and not force:
            raise IllegalTransitionError(
                f"the migration is {current.value}; reads cannot move to {color} from there"
            )
        updated = conn.execute(
            "UPDATE bluegreen.read_router SET color = %s, epoch = epoch + 1, switched_at = now(), "
            "switched_by = %s WHERE id = 1 RETURNING color, epoch, switched_at, switched_by",
            (color, who),
        ).fetchone()
        assert updated is not None
        conn.execute(
            "UPDATE bluegreen.migration SET phase = %s, updated_at = now() WHERE id = 1",
            (to_phase.value,),
        )
        _audit(
            conn,
            who,
            action,
            current.value,
            to_phase.value,
            reason=reason,
            details={**(details or {}), "color": color, "epoch": updated[1]},
        )
        conn.execute("SELECT pg_notify(%s, %s)", (ROUTER_CHANNEL, f"{color}:{updated[1]}"))
    return Router(*updated)


def audit_trail(conn: psycopg.Connection, limit: int = 20) -> list[AuditEntry]:
    rows = conn.execute(
        "SELECT at, actor, action, from_phase, to_phase, reason, details FROM bluegreen.audit "
        "ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [AuditEntry(*row) for row in rows]


def record_verification(conn: psycopg.Connection, report: dict[str, Any]) -> None:
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
    row = conn.execute(
        "SELECT at, clean, differences, snapshot_lsn FROM bluegreen.verification "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"at": row[0], "clean": row[1], "differences": row[2], "snapshot_lsn": row[3]}
