"""`bluegreen snapshot`: plan once, run N worker processes, show progress and metrics.

Workers are separate processes (spawned, never forked: librdkafka threads do not
survive fork) that share nothing but the control database, so more workers, on
this machine or others pointed at the same control database, scale the snapshot
out. This process only watches: progress from the task table, metrics, signals.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from bluegreen import db, logs
from bluegreen.config import Settings
from bluegreen.kafka import ensure_topic
from bluegreen.logs import get_logger
from bluegreen.metrics import Metrics
from bluegreen.progress import progress
from cutover import state
from producers.blue_setup import prepare_blue
from producers.snapshot import tasks
from producers.snapshot.worker import SnapshotWorker
from schemas.source import SourceSpec

_WATCH_INTERVAL_S = 0.5


@dataclass(frozen=True)
class SnapshotReport:
    tasks: int
    completed: int
    dead: int
    rows: int
    seconds: float
    worker_exit_codes: list[int]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.dead == 0 and self.completed == self.tasks and not any(self.worker_exit_codes)


def plan(settings: Settings, source: SourceSpec) -> tuple[int, bool]:
    """Split the table into tasks of about chunk_size rows, once; later calls report them."""
    chunk = settings.snapshot.chunk_size
    with db.connect(settings.control_dsn) as control:
        tasks.ensure_schema(control)
        state.ensure_schema(control)
        control.commit()
        existing = control.execute(
            "SELECT tasks FROM bluegreen.snapshot_plan WHERE source_table = %s",
            (source.qualified,),
        ).fetchone()
        if existing is not None:
            return int(existing[0]), False
        with db.connect(settings.blue_dsn) as blue:
            starts = [
                int(r[0])
                for r in blue.execute(
                    f'SELECT "{source.primary_key}" FROM (SELECT "{source.primary_key}", '
                    f'row_number() OVER (ORDER BY "{source.primary_key}") AS n '
                    f"FROM {source.qualified}) ranked WHERE n %% %s = 1 ORDER BY 1",
                    (chunk,),
                )
            ]
        return tasks.plan_ranges(control, source.qualified, starts, chunk)


def prepare(settings: Settings, source: SourceSpec) -> tuple[int, bool]:
    """Everything a snapshot needs, in the order that keeps it exact: slot, topic, plan."""
    prepare_blue(settings.blue_dsn, source, settings.cdc)
    ensure_topic(settings.kafka, settings.kafka.topic, settings.kafka.partitions)
    return plan(settings, source)


def worker_main(settings: Settings, source: SourceSpec, worker_id: str) -> None:
    """Entry point of a worker process."""
    logs.configure(settings.log)
    worker = SnapshotWorker(settings, source, worker_id=worker_id)
    signal.signal(signal.SIGTERM, lambda _s, _f: worker.request_stop())
    signal.signal(signal.SIGINT, lambda _s, _f: worker.request_stop())
    worker.run()


class SnapshotService:
    def __init__(self, settings: Settings, source: SourceSpec, metrics: Metrics) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.log = get_logger(service="snapshot")
        self._stopping = False
        self._seen_rows = 0
        self._seen_errors = 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        self.log.info("stopping: workers finish the messages in flight", signal=signum)

    def run(self, workers: int) -> SnapshotReport:
        started = time.monotonic()
        planned, fresh = prepare(self.settings, self.source)
        self.log.info("snapshot planned" if fresh else "snapshot resumes", tasks=planned)
        self._phase(state.Phase.SNAPSHOTTING, "snapshot started")
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(
                target=worker_main,
                args=(self.settings, self.source, f"{i}-{time.time_ns():x}"),
                name=f"snapshot-worker-{i}",
            )
            for i in range(workers)
        ]
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for process in processes:
                process.start()
            self._watch(processes)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        with db.connect(self.settings.control_dsn) as control:
            final = tasks.counts(control)
        if final.total and final.by_state.get(tasks.State.COMPLETED, 0) == final.total:
            self._phase(state.Phase.CATCHING_UP, "snapshot completed")
        return SnapshotReport(
            tasks=final.total,
            completed=final.by_state.get(tasks.State.COMPLETED, 0),
            dead=final.by_state.get(tasks.State.DEAD, 0),
            rows=final.rows,
            seconds=time.monotonic() - started,
            worker_exit_codes=[p.exitcode or 0 for p in processes],
        )

    def _watch(self, processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
        with db.connect(self.settings.control_dsn, autocommit=True) as control:
            first = tasks.counts(control)
            with progress("snapshot", total=self._estimate_rows(), unit="rows") as reporter:
                self._seen_rows = first.rows
                self._seen_errors = first.produce_errors
                last_time = time.monotonic()
                signalled = False
                while any(p.is_alive() for p in processes):
                    if self._stopping and not signalled:
                        signalled = True
                        for process in processes:
                            if process.pid is not None and process.is_alive():
                                process.terminate()  # SIGTERM: the worker drains and stops
                    multiprocessing.connection.wait(
                        [p.sentinel for p in processes], timeout=_WATCH_INTERVAL_S
                    )
                    now = time.monotonic()
                    counts = tasks.counts(control)
                    reporter.advance(self._observe(counts, now - last_time))
                    reporter.note(_states(counts))
                    last_time = now
                for process in processes:
                    process.join()
                counts = tasks.counts(control)
                reporter.advance(self._observe(counts, time.monotonic() - last_time))
                reporter.note(_states(counts))

    def _phase(self, phase: state.Phase, action: str) -> None:
        with db.connect(self.settings.control_dsn) as control:
            state.transition(control, phase, action=action, by="bluegreen snapshot", strict=False)

    def _estimate_rows(self) -> int | None:
        with db.connect(self.settings.blue_dsn, autocommit=True) as blue:
            row = blue.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                (self.source.qualified,),
            ).fetchone()
        return int(row[0]) if row and row[0] > 0 else None

    def _observe(self, counts: tasks.TaskCounts, interval: float) -> int:
        for task_state in tasks.State:
            gauge = self.metrics.snapshot_tasks.labels(task_state.value)
            gauge.set(counts.by_state.get(task_state, 0))
        delta = max(0, counts.rows - self._seen_rows)
        self._seen_rows = max(self._seen_rows, counts.rows)
        self.metrics.snapshot_rows.inc(delta)
        self.metrics.snapshot_rows_per_second.set(delta / interval if interval > 0 else 0)
        errors = max(0, counts.produce_errors - self._seen_errors)
        self._seen_errors = max(self._seen_errors, counts.produce_errors)
        self.metrics.snapshot_produce_errors.inc(errors)
        return delta


def _states(counts: tasks.TaskCounts) -> str:
    return " ".join(
        f"{s.value.lower()}={counts.by_state[s]}" for s in tasks.State if counts.by_state.get(s)
    )
