"""A worker's pulse: keeps the claims of its open tasks alive, and notices an orphaning.

It runs in a thread with a control connection of its own, so a worker busy reading blue
or waiting for the broker still holds its tasks. When the control database goes away it
reconnects at every beat, with one warning when beats stop and one line when they
resume: the worker's main loop owns the reconnect deadline and the log line per attempt.
When the process that spawned the worker is gone (it was killed with kill -9, say), the
worker is told to stop: it finishes what is in flight and gives back the rest, instead
of running on with nobody watching it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import psycopg

from bluegreen.control import TaskQueue
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.retry import one_line
from producers.snapshot.deps import pg_transient

CONNECT_TIMEOUT_S = 10


class Heartbeat(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        *,
        parent_pid: int | None = None,
        on_orphaned: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="snapshot-heartbeat", daemon=True)
        self._settings = settings
        self._worker_id = worker_id
        self._parent_pid = parent_pid
        self._on_orphaned = on_orphaned
        self._task_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._paused = False
        self.orphaned = False
        self.failure: BaseException | None = None
        self.log = get_logger(service="snapshot", worker=worker_id)

    def hold(self, task_id: int) -> None:
        with self._lock:
            self._task_ids.add(task_id)

    def drop(self, task_id: int) -> None:
        with self._lock:
            self._task_ids.discard(task_id)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._task_ids)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        interval = self._settings.snapshot.heartbeat_interval_s
        try:
            while not self._stopping.wait(interval):
                self._check_parent()
                self._beat()
        except psycopg.Error as exc:  # not a lost connection: the worker must stop
            self.failure = exc
        finally:
            if self._conn is not None:
                self._conn.close()

    def _beat(self) -> None:
        try:
            if self._conn is None:
                self._conn = db.connect(
                    self._settings.control_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            TaskQueue(self._conn, self._worker_id, self._settings.snapshot).heartbeat(self.held())
        except psycopg.Error as exc:
            if not pg_transient(exc):
                raise
            if not self._paused:
                self.log.warning("heartbeats paused: control unreachable", error=one_line(exc))
                self._paused = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return
        if self._paused:
            self.log.info("heartbeats resumed")
            self._paused = False

    def _check_parent(self) -> None:
        if self.orphaned or self._parent_pid is None or os.getppid() == self._parent_pid:
            return
        self.orphaned = True
        self.log.warning("parent process is gone; finishing the tasks in flight, then stopping")
        if self._on_orphaned is not None:
            self._on_orphaned()
