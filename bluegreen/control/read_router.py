"""The read router record: which color serves reads, and its epoch.

A switch flips the router and the phase together in one audited transaction and
NOTIFYs ``ROUTER_CHANNEL`` with ``color:epoch``; the notification is delivered on
commit, so a client never hears of a switch that did not happen. Clients (see
``cutover.router``) LISTEN and also poll the record, ignoring any epoch not newer
than the one they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bluegreen.control.migration import (
    TRANSITIONS,
    IllegalTransitionError,
    Phase,
    actor,
    lock_phase,
    set_phase,
    write_audit,
)
from bluegreen.core.errors import BluegreenError

ROUTER_CHANNEL = "bluegreen_router"


@dataclass(frozen=True)
class Router:
    color: str
    epoch: int
    switched_at: datetime
    switched_by: str


def router(conn: psycopg.Connection) -> Router:
    row = conn.execute(
        "SELECT color, epoch, switched_at, switched_by FROM bluegreen.read_router WHERE id = 1"
    ).fetchone()
    if row is None:
        raise BluegreenError("the read router is not initialised: run any bluegreen command first")
    return Router(*row)


def router_position(conn: psycopg.Connection) -> tuple[str, int] | None:
    """(color, epoch) of the router, or None when the record is missing: what a client polls."""
    row = conn.execute("SELECT color, epoch FROM bluegreen.read_router WHERE id = 1").fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def listen_router(conn: psycopg.Connection) -> None:
    """Subscribe this (autocommit) connection to router switches."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ROUTER_CHANNEL)))


def parse_router_notice(payload: str) -> tuple[str, int]:
    """(color, epoch) from a switch's NOTIFY payload."""
    color, _, epoch_text = payload.partition(":")
    return color, int(epoch_text)


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
        current = lock_phase(conn)
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
        set_phase(conn, to_phase)
        write_audit(
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
