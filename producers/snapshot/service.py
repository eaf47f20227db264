"""`bluegreen snapshot`: plan once, run N worker processes, show progress and metrics.

Workers are separate processes (spawned, never forked: librdkafka threads do not
survive fork) that share nothing but the control database, so more workers, on
this machine or others pointed at the same control database, scale the snapshot
out. This process prepares, then watches (``supervisor.py``): progress from the task
table, metrics, signals, and workers that exit on the way.

Every call into blue, control or Kafka retries for ``snapshot.reconnect_timeout_s``
with backoff before the run stops with one line naming the dependency.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.kafka import ensure_topic
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.progress import progress
from bluegreen.core.retry import Reconnector
from producers.blue_setup import prepare_blue
from producers.snapshot import deps
from producers.snapshot.channel import DependencyBoard
from producers.snapshot.supervisor import Supervisor
from schemas.source import SourceSpec

T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotReport:
    tasks: int
    completed: int
    dead: int
    rows: int
    seconds: float
    restarts: int = 0  # worker processes started again after they were killed or crashed
    problem: str | None = None  # why it stopped before every task was COMPLETED or DEAD

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """Every task COMPLETED, whatever happened to the worker processes on the way."""
        return self.dead == 0 and self.completed == self.tasks


class Retrying:
    """Calls into blue, control and Kafka, each retried up to the reconnect deadline."""

    def __init__(self, settings: Settings, service: str, gauge: Any = None) -> None:
        timeout = settings.snapshot.reconnect_timeout_s
        self.settings = settings
        self.blue_rc = Reconnector(
            service, "blue", db.describe(settings.blue_dsn), timeout, gauge=gauge
        )
        self.control_rc = Reconnector(
            service, "control", db.describe(settings.control_dsn), timeout, gauge=gauge
        )
        self.kafka_rc = Reconnector(
            service, "kafka", settings.kafka.bootstrap_servers, timeout, gauge=gauge
        )

    def blue(self, fn: Callable[[], T]) -> T:
        return deps.call(self.blue_rc, fn, deps.pg_transient)

    def control(self, fn: Callable[[], T]) -> T:
        return deps.call(self.control_rc, fn, deps.pg_transient)

    def kafka(self, fn: Callable[[], T]) -> T:
        return deps.call(self.kafka_rc, fn, deps.kafka_transient)


def plan(
    settings: Settings, source: SourceSpec, retrying: Retrying | None = None
) -> tuple[int, bool]:
    """Split the table into tasks of about chunk_size rows, once; later calls report them."""
    r = retrying or Retrying(settings, "snapshot")
    existing = r.control(lambda: _existing_plan(settings, source))
    if existing is not None:
        return existing, False
    starts = r.blue(lambda: _range_starts(settings, source))
    return r.control(functools.partial(_record_plan, settings, source, starts))


def _existing_plan(settings: Settings, source: SourceSpec) -> int | None:
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        return control.planned_tasks(conn, source.qualified)


def _range_starts(settings: Settings, source: SourceSpec) -> list[int]:
    query = sql.SQL(
        "SELECT {key} FROM (SELECT {key}, row_number() OVER (ORDER BY {key}) AS n "
        "FROM {table}) ranked WHERE n %% %s = 1 ORDER BY 1"
    ).format(
        key=sql.Identifier(source.primary_key),
        table=sql.Identifier(source.schema, source.table),
    )
    with db.connect(settings.blue_dsn) as blue:
        return [int(r[0]) for r in blue.execute(query, (settings.snapshot.chunk_size,))]


def _record_plan(settings: Settings, source: SourceSpec, starts: list[int]) -> tuple[int, bool]:
    with db.connect(settings.control_dsn) as conn:
        return control.plan_ranges(conn, source.qualified, starts, settings.snapshot.chunk_size)


def prepare(
    settings: Settings, source: SourceSpec, retrying: Retrying | None = None
) -> tuple[int, bool]:
    """Everything a snapshot needs, in the order that keeps it exact: slot, topic, plan."""
    r = retrying or Retrying(settings, "snapshot")
    r.blue(lambda: prepare_blue(settings.blue_dsn, source, settings.cdc))
    r.kafka(lambda: _ensure_topic(settings))
    return plan(settings, source, r)


def _ensure_topic(settings: Settings) -> None:
    deps.probe_kafka(settings.kafka)  # fails in seconds where ensure_topic waits 30
    ensure_topic(settings.kafka, settings.kafka.topic, settings.kafka.partitions)


class SnapshotService:
    def __init__(self, settings: Settings, source: SourceSpec, metrics: Metrics) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.log = get_logger(service="snapshot")
        self._supervisor: Supervisor | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._supervisor is not None:
            self._supervisor.request_stop()
        self.log.info("stopping: workers finish the messages in flight", signal=signum)

    def run(self, workers: int) -> SnapshotReport:
        started = time.monotonic()
        board = DependencyBoard(self.metrics.dependency_up)
        retrying = Retrying(self.settings, "snapshot", board.source("snapshot"))
        planned, fresh = prepare(self.settings, self.source, retrying)
        self.log.info("snapshot planned" if fresh else "snapshot resumes", tasks=planned)
        retrying.control(lambda: self._phase(control.Phase.SNAPSHOTTING, "snapshot started"))
        supervisor = Supervisor(
            self.settings, self.source, self.metrics, board, retrying.control_rc
        )
        self._supervisor = supervisor
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        before = retrying.control(self._counts)
        try:
            with progress("snapshot", total=self._estimate_rows(), unit="rows") as reporter:
                supervisor.run(workers, reporter, before)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._supervisor = None
        final = retrying.control(self._counts)
        completed = final.by_state.get(control.State.COMPLETED, 0)
        if final.total and completed == final.total:
            retrying.control(lambda: self._phase(control.Phase.CATCHING_UP, "snapshot completed"))
        problem = supervisor.problem()
        if problem is None and supervisor.stopping:
            problem = "stopped on request; run `bluegreen snapshot` again to resume"
        return SnapshotReport(
            tasks=final.total,
            completed=completed,
            dead=final.by_state.get(control.State.DEAD, 0),
            rows=final.rows,
            seconds=time.monotonic() - started,
            restarts=supervisor.restarts,
            problem=problem,
        )

    def _counts(self) -> control.TaskCounts:
        with db.connect(self.settings.control_dsn) as conn:
            return control.task_counts(conn)

    def _phase(self, phase: control.Phase, action: str) -> None:
        with db.connect(self.settings.control_dsn) as conn:
            control.transition(conn, phase, action=action, by="bluegreen snapshot", strict=False)

    def _estimate_rows(self) -> int | None:
        """For the progress bar only: unknown when blue does not answer right now."""
        try:
            with db.connect(self.settings.blue_dsn, autocommit=True) as blue:
                row = blue.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    (self.source.qualified,),
                ).fetchone()
        except psycopg.OperationalError:
            return None
        return int(row[0]) if row and row[0] > 0 else None
