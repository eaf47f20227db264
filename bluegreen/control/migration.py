"""The migration's phase and its audit trail.

The phase moves through a fixed set of transitions; every transition is written
with who or what caused it and why, in the same transaction as the change itself
(the row of ``bluegreen.migration`` is locked ``FOR UPDATE`` while it is decided).
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


class Phase(StrEnum):
    PLANNED = "planned"
    SNAPSHOTTING = "snapshotting"
    CATCHING_UP = "catching-up"
    IN_SYNC = "in-sync"
    READS_ON_GREEN = "reads-on-green"
    WRITES_SWITCHING = "writes-switching"
    WRITES_ON_GREEN = "writes-on-green"
    WRITES_ROLLING_BACK = "writes-rolling-back"
    ROLLED_BACK = "rolled-back"
    COMPLETED = "completed"


# phase -> the phases it may move to
TRANSITIONS: dict[Phase, set[Phase]] = {
    Phase.PLANNED: {Phase.SNAPSHOTTING},
    Phase.SNAPSHOTTING: {Phase.CATCHING_UP},
    Phase.CATCHING_UP: {Phase.IN_SYNC, Phase.SNAPSHOTTING},
    Phase.IN_SYNC: {Phase.READS_ON_GREEN, Phase.CATCHING_UP, Phase.SNAPSHOTTING},
    Phase.READS_ON_GREEN: {Phase.ROLLED_BACK, Phase.COMPLETED, Phase.WRITES_SWITCHING},
    # The write switch: paused at the router, then either flipped to green or aborted
    # back (writes resume on blue); its rollback likewise flips back or aborts.
    Phase.WRITES_SWITCHING: {Phase.WRITES_ON_GREEN, Phase.READS_ON_GREEN},
    Phase.WRITES_ON_GREEN: {Phase.WRITES_ROLLING_BACK, Phase.COMPLETED},
    Phase.WRITES_ROLLING_BACK: {Phase.READS_ON_GREEN, Phase.WRITES_ON_GREEN},
    Phase.ROLLED_BACK: {Phase.READS_ON_GREEN, Phase.IN_SYNC, Phase.CATCHING_UP, Phase.SNAPSHOTTING},
    Phase.COMPLETED: set(),
}


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


def actor() -> str:
    """Who is acting: user@host (pid), for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


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
        current = lock_phase(conn)
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
        set_phase(conn, to)
        write_audit(
            conn, by or actor(), action, current.value, to.value, reason=reason, details=details
        )
    return current


def audit(
    conn: psycopg.Connection,
    action: str,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    by: str | None = None,
) -> None:
    """Audit an action that does not move the phase (a refused cutover, say)."""
    with conn.transaction():
        current = phase(conn)
        write_audit(
            conn, by or actor(), action, current.value, None, reason=reason, details=details
        )


def audit_trail(conn: psycopg.Connection, limit: int = 20) -> list[AuditEntry]:
    """The last `limit` audited actions, newest first."""
    rows = conn.execute(
        "SELECT at, actor, action, from_phase, to_phase, reason, details FROM bluegreen.audit "
        "ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [AuditEntry(*row) for row in rows]


# -- the pieces of a transition, for changes that move the phase with something else ----------


def lock_phase(conn: psycopg.Connection) -> Phase:
    """The phase, its row locked until the caller's transaction ends."""
    row = conn.execute("SELECT phase FROM bluegreen.migration WHERE id = 1 FOR UPDATE").fetchone()
    return Phase(row[0]) if row else Phase.PLANNED


def set_phase(conn: psycopg.Connection, to: Phase) -> None:
    conn.execute(
        "UPDATE bluegreen.migration SET phase = %s, updated_at = now() WHERE id = 1",
        (to.value,),
    )


def write_audit(
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
