"""Write ownership on the router record: which color takes writes, and the write pause.

The write switch moves in audited steps, each one transaction that also moves the
phase: pause (routers hold new writes), flip (green or blue owns writes), resume.
Every step bumps ``write_epoch`` and NOTIFYs ``WRITES_CHANNEL`` with
``color:epoch:paused:budget_ms`` on commit; clients (``cutover.router``) LISTEN, poll the
record as a fallback and ignore any epoch not newer than the one they hold.
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

WRITES_CHANNEL = "bluegreen_writes"


@dataclass(frozen=True)
class WriteRoute:
    """What a router needs to route a write: the owner, the epoch, the pause."""

    color: str
    epoch: int
    paused: bool
    budget_ms: int

    def notice(self) -> str:
        return f"{self.color}:{self.epoch}:{int(self.paused)}:{self.budget_ms}"


@dataclass(frozen=True)
class WriteState:
    route: WriteRoute
    paused_at: datetime | None
    refresh_pending: bool


_SELECT = (
    "SELECT write_color, write_epoch, writes_paused, pause_budget_ms, paused_at, "
    "refresh_pending FROM bluegreen.read_router WHERE id = 1"
)


def _state(row: tuple[Any, ...]) -> WriteState:
    route = WriteRoute(str(row[0]), int(row[1]), bool(row[2]), int(row[3]))
    return WriteState(route, row[4], bool(row[5]))


def write_state(conn: psycopg.Connection) -> WriteState:
    row = conn.execute(_SELECT).fetchone()
    if row is None:
        raise BluegreenError("the router is not initialised: run any bluegreen command first")
    return _state(row)


def write_route(conn: psycopg.Connection) -> WriteRoute | None:
    """The write route, or None when the record is missing: what a client polls."""
    row = conn.execute(_SELECT).fetchone()
    return None if row is None else _state(row).route


def listen_writes(conn: psycopg.Connection) -> None:
    """Subscribe this (autocommit) connection to write pauses, flips and resumes."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(WRITES_CHANNEL)))


def parse_write_notice(payload: str) -> WriteRoute:
    color, epoch, paused, budget = payload.split(":")
    return WriteRoute(color, int(epoch), paused == "1", int(budget))


def change_writes(
    conn: psycopg.Connection,
    *,
    action: str,
    color: str | None = None,
    paused: bool | None = None,
    budget_ms: int | None = None,
    to_phase: Phase | None = None,
    expect_color: str | None = None,
    refresh_pending: bool | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> WriteState:
    """One step of the write switch, audited, the phase moved with it; NOTIFY on commit.

    ``color``: the new owner (None: unchanged); ``paused``: pause or resume (None:
    unchanged); ``to_phase``: the phase this step moves to (None: unchanged);
    ``expect_color``: refuse unless writes are owned by that color now;
    ``refresh_pending``: mark (or clear) keys written on green as awaiting a refresh.
    """
    who = actor()
    with conn.transaction():
        current = lock_phase(conn)
        if to_phase is not None and to_phase != current and to_phase not in TRANSITIONS[current]:
            raise IllegalTransitionError(
                f"the migration is {current.value}; {action} cannot move it to {to_phase.value}"
            )
        before = write_state(conn)
        if paused and before.route.paused:
            raise BluegreenError(
                f"writes are already paused (write epoch {before.route.epoch}): another "
                f"switch is running, or died (`bluegreen cutover --writes --recover`); "
                f"{action} refused"
            )
        if expect_color is not None and before.route.color != expect_color:
            raise BluegreenError(
                f"writes are owned by {before.route.color}, not {expect_color}; {action} refused"
            )
        row = conn.execute(
            "UPDATE bluegreen.read_router SET write_color = coalesce(%(color)s, write_color), "
            "write_epoch = write_epoch + 1, "
            "writes_paused = coalesce(%(paused)s, writes_paused), "
            "pause_budget_ms = coalesce(%(budget)s, pause_budget_ms), "
            "paused_at = CASE WHEN %(paused)s THEN now() "
            "WHEN NOT %(paused)s THEN NULL ELSE paused_at END, "
            "refresh_pending = coalesce(%(refresh)s, refresh_pending) "
            "WHERE id = 1 RETURNING write_color, write_epoch, writes_paused, pause_budget_ms, "
            "paused_at, refresh_pending",
            {"color": color, "paused": paused, "budget": budget_ms, "refresh": refresh_pending},
        ).fetchone()
        assert row is not None
        after = _state(row)
        if to_phase is not None:
            set_phase(conn, to_phase)
        write_audit(
            conn,
            who,
            action,
            current.value,
            None if to_phase is None else to_phase.value,
            reason=reason,
            details={
                **(details or {}),
                "write_color": after.route.color,
                "write_epoch": after.route.epoch,
                "writes_paused": after.route.paused,
            },
        )
        conn.execute("SELECT pg_notify(%s, %s)", (WRITES_CHANNEL, after.route.notice()))
    return after


def set_refresh_pending(conn: psycopg.Connection, pending: bool, *, action: str) -> None:
    """Whether keys written on green still await their re-snapshot (a cutover gate)."""
    with conn.transaction():
        current = lock_phase(conn)
        conn.execute(
            "UPDATE bluegreen.read_router SET refresh_pending = %s WHERE id = 1", (pending,)
        )
        write_audit(
            conn, actor(), action, current.value, None, reason=None, details={"pending": pending}
        )


# -- write clients: each router with write connections reports what it has seen --------


@dataclass(frozen=True)
class WriteClient:
    client_id: str
    seen_epoch: int
    drained: bool
    heartbeat_at: datetime


def report_client(conn: psycopg.Connection, client_id: str, seen_epoch: int, drained: bool) -> None:
    """A router's heartbeat: the write epoch it acts on, and (while paused) whether its
    writes on the paused owner have all ended. Autocommit connection expected."""
    conn.execute(
        "INSERT INTO bluegreen.write_client (client_id, seen_epoch, drained) VALUES (%s, %s, %s) "
        "ON CONFLICT (client_id) DO UPDATE SET seen_epoch = excluded.seen_epoch, "
        "drained = excluded.drained, heartbeat_at = now()",
        (client_id, seen_epoch, drained),
    )


def forget_client(conn: psycopg.Connection, client_id: str) -> None:
    conn.execute("DELETE FROM bluegreen.write_client WHERE client_id = %s", (client_id,))


def lagging_clients(
    conn: psycopg.Connection, epoch: int, live_within_s: float
) -> list[WriteClient]:
    """Live clients (a heartbeat within `live_within_s`) that have not yet seen `epoch` or
    still have writes in flight on the paused owner: what a write switch waits for."""
    rows = conn.execute(
        "SELECT client_id, seen_epoch, drained, heartbeat_at FROM bluegreen.write_client "
        "WHERE heartbeat_at > now() - make_interval(secs => %s) "
        "AND (seen_epoch < %s OR NOT drained) ORDER BY client_id",
        (live_within_s, epoch),
    ).fetchall()
    return [WriteClient(str(r[0]), int(r[1]), bool(r[2]), r[3]) for r in rows]
