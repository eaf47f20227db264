"""The worker processes of one `bluegreen snapshot` run, and what happens when one exits.

The parent sees a worker process exit the moment it happens (its sentinel), so the
tasks it held go back to the queue at once instead of after the heartbeat timeout.
Then, by how it exited:

- 0: it found nothing left to do, or was asked to stop. Not restarted.
- EXIT_GAVE_UP: a dependency stayed away past the reconnect timeout (or another error a
  restart cannot cure); its one-line reason came through its pipe. Not restarted: its
  siblings see the same dependency, and the run ends with that line.
- anything else (kill -9, out of memory, a crash): started again under a new worker id,
  at once the first time, then with backoff; after _MAX_CRASHES in a row without any
  task completing in between, the slot gives up.

The parent's own control connection rides through restarts like a worker's does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import secrets
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psycopg

from bluegreen.control import State, TaskCounts, release_worker, task_counts
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.progress import Reporter
from bluegreen.core.retry import Reconnector
from producers.snapshot.channel import DEPENDENCY, GAVE_UP, DependencyBoard
from producers.snapshot.deps import Dependency, permanent, pg_transient
from producers.snapshot.heartbeat import CONNECT_TIMEOUT_S
from producers.snapshot.worker import worker_id_for
from producers.snapshot.worker_process import EXIT_GAVE_UP, worker_main
from schemas.source import SourceSpec

_WATCH_INTERVAL_S = 0.5
_MAX_CRASHES = 5  # in a row, without a task completing in between
_RESTART_BACKOFF_MAX_S = 30.0
_STOP_TIMEOUT_S = 45.0  # a worker drains for at most 30 s after SIGTERM


@dataclass
class _Slot:
    """One of the N workers: the process running in it now, and its history."""

    index: int
    process: BaseProcess
    worker_id: str
    reader: Connection | None
    completed_at_start: int
    crashes: int = 0
    exited: bool = False
    restart_at: float | None = None
    gave_up: str | None = None
    message: str | None = None

    @property
    def name(self) -> str:
        return f"snapshot worker {self.index}"


@dataclass
class _Seen:
    """What progress and metrics reported last."""

    rows: int = 0
    errors: int = 0
    at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        metrics: Metrics,
        board: DependencyBoard,
        control: Reconnector,
    ) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.board = board
        self.log = get_logger(service="snapshot")
        self._context = multiprocessing.get_context("spawn")
        self._nonce = secrets.token_hex(3)
        self._slots: list[_Slot] = []
        self._releases: list[tuple[str, str]] = []  # (worker id, why) still to write
        self._conn: psycopg.Connection | None = None
        self._control = Dependency(control, self._connect, pg_transient)
        self._counts: TaskCounts | None = None
        self._seen = _Seen()
        self._stopping = False
        self._signalled = False
        self._done = False
        self.restarts = 0

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def problem(self) -> str | None:
        """Why the run could not go on, in one line, if a worker said so."""
        return next((s.gave_up for s in self._slots if s.gave_up), None)

    def run(self, workers: int, reporter: Reporter, before: TaskCounts) -> None:
        """Until every task is COMPLETED or DEAD, or it cannot go on; `before` is the
        task table as it was before this run (its rows are not this run's progress)."""
        self._counts = before
        self._seen = _Seen(before.rows, before.produce_errors)
        try:
            for index in range(workers):
                self._slots.append(self._spawn(index, crashes=0))
            while not self._done:
                self._step(reporter)
        finally:
            self._stop_all()
            if self._conn is not None:
                self._conn.close()

    # -- one turn of the watch loop ----------------------------------------------------------

    def _step(self, reporter: Reporter) -> None:
        if self._stopping and not self._signalled:
            self._signalled = True
            for slot in self._alive():
                slot.process.terminate()  # SIGTERM: the worker drains and stops
        handles: list[Connection | int] = [s.process.sentinel for s in self._alive()]
        handles += [s.reader for s in self._slots if s.reader is not None]
        if handles:
            multiprocessing.connection.wait(handles, timeout=_WATCH_INTERVAL_S)
        else:
            time.sleep(min(_WATCH_INTERVAL_S, max(0.01, self._control.seconds_to_retry())))
        for slot in self._slots:
            self._read(slot)
            if not slot.exited and not slot.process.is_alive():
                self._exited(slot)
        if self._control.ready():
            self._write_releases()
            self._watch_counts(reporter)
        self._restart_due()
        self._done = self._finished()

    def _alive(self) -> list[_Slot]:
        return [s for s in self._slots if not s.exited]

    def _finished(self) -> bool:
        if self._alive() or self._releases or any(s.restart_at is not None for s in self._slots):
            return False
        if self._stopping or self.problem() is not None:
            return True
        if not self._control.up:
            return False  # keep probing it: DependencyError at the reconnect deadline
        counts = self._count()
        if counts is None:
            return False
        if not counts.open:
            return True
        # Every worker found nothing left, yet tasks are open: added since (a repair).
        for slot in self._slots:
            slot.restart_at = time.monotonic()
        return False

    # -- worker processes ------------------------------------------------------------------

    def _spawn(self, index: int, crashes: int) -> _Slot:
        reader, writer = self._context.Pipe(duplex=False)
        prefix = f"w{index}.{self._nonce}"
        process = self._context.Process(
            target=worker_main,
            args=(self.settings, self.source, writer),
            kwargs={"prefix": prefix, "index": index, "parent_pid": os.getpid()},
            name=f"snapshot-worker-{index}",
        )
        process.start()
        writer.close()  # the worker holds the only write end: its exit is our EOF
        assert process.pid is not None
        completed = self._counts.by_state.get(State.COMPLETED, 0) if self._counts else 0
        return _Slot(index, process, worker_id_for(prefix, process.pid), reader, completed, crashes)

    def _read(self, slot: _Slot) -> None:
        """Messages from the worker: dependency states, and why it gave up."""
        while slot.reader is not None and slot.reader.poll():
            try:
                message = slot.reader.recv()
            except (EOFError, OSError):
                slot.reader.close()
                slot.reader = None
                return
            if message[0] == DEPENDENCY:
                self.board.report(slot.worker_id, message[1], message[2])
            elif message[0] == GAVE_UP:
                slot.message = message[1]

    def _exited(self, slot: _Slot) -> None:
        slot.process.join()
        slot.exited = True
        self._read(slot)
        self.board.forget(slot.worker_id)
        code = slot.process.exitcode
        how = _exit_text(code)
        self._releases.append((slot.worker_id, f"worker {slot.worker_id} {how}"))
        if code == 0 or self._stopping:
            return
        if code == EXIT_GAVE_UP:
            slot.gave_up = slot.message or f"{slot.name} gave up ({how})"
            return
        completed = self._counts.by_state.get(State.COMPLETED, 0) if self._counts else 0
        crashes = 1 if completed > slot.completed_at_start else slot.crashes + 1
        if crashes > _MAX_CRASHES:
            slot.gave_up = (
                f"{slot.name} {how} {crashes - 1} times in a row without a task completing; "
                "see its log lines above"
            )
            self.log.error("worker keeps exiting; not restarting it", worker=slot.name, exit=how)
            return
        delay = 0.0 if crashes == 1 else min(_RESTART_BACKOFF_MAX_S, 2.0 ** (crashes - 2))
        slot.crashes = crashes
        slot.restart_at = time.monotonic() + delay
        self.log.warning(
            "worker process exited; its tasks go back to the queue and it is started again",
            worker=slot.name,
            worker_id=slot.worker_id,
            exit=how,
            restart_in_s=delay,
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for position, slot in enumerate(self._slots):
            if slot.restart_at is None or slot.restart_at > now:
                continue
            if self._stopping:
                slot.restart_at = None
                continue
            self._slots[position] = self._spawn(slot.index, slot.crashes)
            self.restarts += 1

    def _stop_all(self) -> None:
        """On the way out (also by an error): no worker outlives this process."""
        for slot in self._alive():
            slot.process.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            if slot.reader is not None:
                slot.reader.close()
                slot.reader = None

    # -- the control database --------------------------------------------------------------

    def _connect(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = db.connect(
            self.settings.control_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )

    def _write_releases(self) -> None:
        """Give the tasks of exited workers back to the queue (guarded by worker id)."""
        while self._releases and self._conn is not None:
            worker_id, why = self._releases[0]
            try:
                released = release_worker(
                    self._conn, worker_id, self.settings.snapshot.max_attempts, why
                )
            except psycopg.Error as exc:
                self._lost(exc)
                return
            self._releases.pop(0)
            if released:
                self.log.info(
                    "tasks of an exited worker are back in the queue",
                    worker_id=worker_id,
                    tasks={task_id: state.value for task_id, state in released},
                )

    def _count(self) -> TaskCounts | None:
        if self._conn is None:
            return None
        try:
            self._counts = task_counts(self._conn)
        except psycopg.Error as exc:
            self._lost(exc)
            return None
        return self._counts

    def _lost(self, exc: psycopg.Error) -> None:
        if not pg_transient(exc):
            raise permanent(self._control.reconnector, exc) from exc
        self._control.lost(exc)

    # -- progress and metrics --------------------------------------------------------------

    def _watch_counts(self, reporter: Reporter) -> None:
        counts = self._count()
        if counts is None:
            return
        now = time.monotonic()
        for task_state in State:
            gauge = self.metrics.snapshot_tasks.labels(task_state.value)
            gauge.set(counts.by_state.get(task_state, 0))
        seen = self._seen
        delta = max(0, counts.rows - seen.rows)
        interval = now - seen.at
        seen.rows, seen.at = max(seen.rows, counts.rows), now
        self.metrics.snapshot_rows.inc(delta)
        self.metrics.snapshot_rows_per_second.set(delta / interval if interval > 0 else 0)
        self.metrics.snapshot_produce_errors.inc(max(0, counts.produce_errors - seen.errors))
        seen.errors = max(seen.errors, counts.produce_errors)
        reporter.advance(delta)
        reporter.note(states_text(counts))


def states_text(counts: TaskCounts) -> str:
    return " ".join(
        f"{s.value.lower()}={counts.by_state[s]}" for s in State if counts.by_state.get(s)
    )


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
