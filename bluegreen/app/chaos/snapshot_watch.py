"""A chaos run's view of the snapshot's progress, from the control database: when a
snapshot-phase fault fires, and when the snapshot is over."""

from __future__ import annotations

import psycopg

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings


class SnapshotWatch:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: psycopg.Connection | None = None
        self._done = False

    def tasks(self) -> tuple[int, int]:
        """(completed, total) snapshot tasks; (0, 0) before the snapshot planned them."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self._settings.control_dsn, autocommit=True)
            counts = control.task_counts(self._conn)
        except psycopg.errors.UndefinedTable:
            return 0, 0
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return 0, 0
        return counts.by_state.get(control.State.COMPLETED, 0), counts.total

    def done(self) -> bool:
        """Every task COMPLETED (once true, it stays true: no new read is made)."""
        if not self._done:
            completed, total = self.tasks()
            self._done = total > 0 and completed == total
        return self._done

    def share(self) -> float:
        completed, total = self.tasks()
        return completed / total if total else 0.0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
