"""The snapshot task queue as workers see it: claim, heartbeat, complete, fail, give back.

Tasks are claimed with ``FOR UPDATE SKIP LOCKED`` so any number of workers, on
any number of machines sharing the control database, take distinct tasks. A
worker proves it is alive with heartbeats; a task whose heartbeat expired is
claimed again, and a worker whose process is known to have exited has its tasks
released at once (``release_worker``). Every state change checks the claim (worker
and attempt), so a worker that lost its task cannot complete it.

Every claim opens a row in ``snapshot_task_attempt`` and every end of it closes that
row with its outcome, so an operator (and a test) can read what happened to a task:
who ran it, when, and why each attempt ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import psycopg

from bluegreen.core.config import SnapshotSettings


class State(StrEnum):
    READY = "READY"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    DEAD = "DEAD"


class Outcome(StrEnum):
    """How an attempt ended."""

    COMPLETED = "completed"  # every message acknowledged
    FAILED = "failed"  # the task's own error: counts against max_attempts
    RELEASED = "released"  # given back on a clean stop: does not count
    INTERRUPTED = "interrupted"  # blue, control or Kafka went away: does not count
    WORKER_EXITED = "worker_exited"  # its process exited holding it: counts
    HEARTBEAT_EXPIRED = "heartbeat_expired"  # nobody heard from its worker: counts


_CLOSE_ATTEMPT = (
    "UPDATE bluegreen.snapshot_task_attempt SET ended_at = now(), outcome = %s, detail = %s "
    "WHERE task_id = ANY(%s) AND ended_at IS NULL"
)


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
            expired = self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET state = 'DEAD', worker_id = NULL, "
                "last_error = coalesce(last_error || E'\\n', '') || "
                "  format('worker %%s stopped heartbeating (attempt %%s of %%s)', "
                "         worker_id, attempts, %(max)s::int) "
                "WHERE state = 'IN_PROGRESS' AND attempts >= %(max)s "
                "AND heartbeat_at < now() - make_interval(secs => %(timeout)s) RETURNING id",
                {"max": self.settings.max_attempts, "timeout": timeout},
            ).fetchall()
            if expired:
                self._close([r[0] for r in expired], Outcome.HEARTBEAT_EXPIRED, None)
            row = self.conn.execute(
                "UPDATE bluegreen.snapshot_task t SET state = 'IN_PROGRESS', "
                "worker_id = %(worker)s, attempts = t.attempts + 1, heartbeat_at = now(), "
                "started_at = now() "
                "FROM (SELECT id, worker_id AS previous FROM bluegreen.snapshot_task "
                "      WHERE (state IN ('READY', 'ERROR') AND not_before <= now()) "
                "         OR (state = 'IN_PROGRESS' "
                "             AND heartbeat_at < now() - make_interval(secs => %(timeout)s)) "
                "      ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) claimable "
                "WHERE t.id = claimable.id "
                "RETURNING t.id, t.source_table, t.kind, t.lo, t.hi, t.keys, t.attempts, "
                "claimable.previous",
                {"worker": self.worker_id, "timeout": timeout},
            ).fetchone()
            if row is None:
                return None
            task = Task(*row[:7])
            # Only a takeover leaves an attempt open: its worker stopped heartbeating.
            self._close([task.id], Outcome.HEARTBEAT_EXPIRED, f"worker {row[7]} went silent")
            self.conn.execute(
                "INSERT INTO bluegreen.snapshot_task_attempt (task_id, attempt, worker_id) "
                "VALUES (%s, %s, %s)",
                (task.id, task.attempts, self.worker_id),
            )
        return task

    def heartbeat(self, task_ids: Sequence[int]) -> None:
        if task_ids:
            self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET heartbeat_at = now() "
                "WHERE id = ANY(%s) AND worker_id = %s AND state = 'IN_PROGRESS'",
                (list(task_ids), self.worker_id),
            )

    def complete(self, task: Task, rows: int, snapshot_lsn: int) -> bool:
        """Mark COMPLETED; False when this worker no longer held the task.

        Idempotent for its own attempt: called again after the connection dropped around
        the COMMIT, it finds the task COMPLETED by this very attempt and says True.
        """
        with self.conn.transaction():
            cur = self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET state = 'COMPLETED', rows = %s, "
                "snapshot_lsn = %s, finished_at = now() "
                "WHERE id = %s AND worker_id = %s AND attempts = %s AND state = 'IN_PROGRESS'",
                (rows, snapshot_lsn, task.id, self.worker_id, task.attempts),
            )
            if cur.rowcount == 1:
                self._close([task.id], Outcome.COMPLETED, None)
                return True
            done = self.conn.execute(
                "SELECT 1 FROM bluegreen.snapshot_task WHERE id = %s AND worker_id = %s "
                "AND attempts = %s AND state = 'COMPLETED'",
                (task.id, self.worker_id, task.attempts),
            ).fetchone()
        return done is not None

    def fail(self, task: Task, error: str, produce_errors: int = 0) -> State:
        """Record a failed attempt: ERROR with exponential backoff, or DEAD when out of attempts."""
        base, cap = self.settings.backoff_base_s, self.settings.backoff_max_s
        with self.conn.transaction():
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
            if row is not None:
                self._close([task.id], Outcome.FAILED, error[:4000])
        return State(row[0]) if row else State.IN_PROGRESS

    def release(self, task: Task) -> None:
        """Give back a task on a clean shutdown; the attempt does not count."""
        self._give_back(task, Outcome.RELEASED, None)

    def interrupt(self, task: Task, cause: str) -> State:
        """Give back a task whose attempt a dependency (blue, control, Kafka) cut short.

        The attempt does not count: the task did nothing wrong, and a broker or blue
        restart must not walk every task in flight towards DEAD. Not forever, though:
        a task that itself brings its dependency down (a row that crashes blue's backend,
        say) would then loop for ever, so once a task has been interrupted max_attempts
        times every further interruption counts as a failed attempt.
        """
        with self.conn.transaction():
            row = self.conn.execute(
                "SELECT count(*) FROM bluegreen.snapshot_task_attempt "
                "WHERE task_id = %s AND outcome = 'interrupted'",
                (task.id,),
            ).fetchone()
            if row is not None and row[0] >= self.settings.max_attempts:
                return self.fail(task, f"interrupted {row[0] + 1} times; last: {cause}")
            self._give_back(task, Outcome.INTERRUPTED, cause)
        return State.READY

    def open_count(self) -> int:
        """Tasks of any worker not finished yet: READY, IN_PROGRESS or ERROR."""
        row = self.conn.execute(
            "SELECT count(*) FROM bluegreen.snapshot_task "
            "WHERE state IN ('READY', 'IN_PROGRESS', 'ERROR')"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _give_back(self, task: Task, outcome: Outcome, cause: str | None) -> None:
        with self.conn.transaction():
            cur = self.conn.execute(
                "UPDATE bluegreen.snapshot_task SET state = 'READY', attempts = attempts - 1, "
                "worker_id = NULL, heartbeat_at = NULL, not_before = now(), "
                "last_error = coalesce(%s, last_error) "
                "WHERE id = %s AND worker_id = %s AND attempts = %s AND state = 'IN_PROGRESS'",
                (cause, task.id, self.worker_id, task.attempts),
            )
            if cur.rowcount == 1:
                self._close([task.id], outcome, cause)

    def release_unknown(self, held: Sequence[int]) -> list[int]:
        """Give back tasks claimed under this worker's id that it does not know it holds.

        A claim whose COMMIT reached the server but whose answer was lost with the
        connection leaves such a task; without this it would wait for the heartbeat
        timeout.
        """
        with self.conn.transaction():
            ids = [
                int(r[0])
                for r in self.conn.execute(
                    "UPDATE bluegreen.snapshot_task SET state = 'READY', "
                    "attempts = attempts - 1, worker_id = NULL, heartbeat_at = NULL "
                    "WHERE worker_id = %s AND state = 'IN_PROGRESS' AND NOT (id = ANY(%s)) "
                    "RETURNING id",
                    (self.worker_id, list(held)),
                ).fetchall()
            ]
            if ids:
                self._close(ids, Outcome.RELEASED, "claim lost with the control connection")
        return ids

    def _close(self, task_ids: list[int], outcome: Outcome, detail: str | None) -> None:
        _close_attempts(self.conn, task_ids, outcome, detail)


def _close_attempts(
    conn: psycopg.Connection, task_ids: list[int], outcome: Outcome, detail: str | None
) -> None:
    conn.execute(_CLOSE_ATTEMPT, (outcome.value, detail, task_ids))


def release_worker(
    conn: psycopg.Connection, worker_id: str, max_attempts: int, detail: str
) -> list[tuple[int, State]]:
    """Give back the IN_PROGRESS tasks of a worker whose process is known to have exited.

    Only tasks claimed under exactly this worker id, which no live process holds (ids
    are unique per process), so a live worker's task is never touched. The attempt
    counts, as on a heartbeat expiry: the process may have died of this very task
    (out of memory, a crash in a library), and max_attempts must stop that loop.
    """
    with conn.transaction():
        rows = conn.execute(
            "UPDATE bluegreen.snapshot_task SET "
            "state = CASE WHEN attempts >= %(max)s THEN 'DEAD' ELSE 'READY' END, "
            "worker_id = NULL, heartbeat_at = NULL, not_before = now(), last_error = %(detail)s "
            "WHERE worker_id = %(worker)s AND state = 'IN_PROGRESS' RETURNING id, state",
            {"max": max_attempts, "detail": detail, "worker": worker_id},
        ).fetchall()
        if rows:
            _close_attempts(conn, [int(r[0]) for r in rows], Outcome.WORKER_EXITED, detail)
    return [(int(i), State(s)) for i, s in rows]
