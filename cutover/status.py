"""What `bluegreen status` shows: every figure an operator needs, gathered read-only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from bluegreen import db
from bluegreen.config import Settings
from producers.blue_setup import SlotHealth, slot_health
from producers.snapshot import tasks


@dataclass
class SnapshotStatus:
    tasks_by_state: dict[str, int]
    rows: int
    last_errors: list[dict[str, Any]]


@dataclass
class Status:
    snapshot: SnapshotStatus | None = None
    slot: SlotHealth | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.slot is not None:
            data["slot"]["lag_bytes"] = self.slot.lag_bytes
            data["slot"]["retained_bytes"] = self.slot.retained_bytes
        return data


def collect(settings: Settings) -> Status:
    status = Status()
    try:
        with db.connect(settings.control_dsn, autocommit=True, connect_timeout=5) as control:
            status.snapshot = _snapshot(control)
    except psycopg.Error as exc:
        status.problems.append(f"control database: {exc}".strip())
    try:
        with db.connect(settings.blue_dsn, autocommit=True, connect_timeout=5) as blue:
            status.slot = slot_health(blue, settings.cdc.slot)
    except psycopg.Error as exc:
        status.problems.append(f"blue: {exc}".strip())
    return status


def _snapshot(control: psycopg.Connection) -> SnapshotStatus | None:
    exists = control.execute("SELECT to_regclass('bluegreen.snapshot_task')").fetchone()
    if exists is None or exists[0] is None:
        return None
    counts = tasks.counts(control)
    return SnapshotStatus(
        tasks_by_state=counts.by_state,
        rows=counts.rows,
        last_errors=[
            {"task": i, "state": s, "attempts": a, "error": e} for i, s, e, a in counts.last_errors
        ],
    )
