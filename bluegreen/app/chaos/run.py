"""One chaos run, and many.

A run, on its own databases, topic, slot and consumer group (``bluegreen.app.scratch``):

1. seed blue (`bluegreen seed` logic), start `bluegreen cdc` and two `bluegreen consume`;
2. start the write load, then `bluegreen snapshot --workers 2`;
3. snapshot phase: each snapshot-phase fault fires when its share of the tasks is
   COMPLETED; then the CDC phase: each CDC fault fires at its share of the window
   between the snapshot's end and the end of the writes (`write_seconds` after they
   began, and at least `min_cdc_window_s` after the snapshot's end);
4. quiet: the writes stop; every service is made to run; poll until green equals
   transform(blue) and every partition is drained, or `converge_timeout_s` passes;
5. judge: the product-level comparison, `bluegreen verify`, offsets, dead letters,
   unexpected exits, and the load's coverage; keep the evidence of a failing run.
"""

from __future__ import annotations

import math
import random
import shutil
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from confluent_kafka import KafkaException

from bluegreen.app.chaos import check, report
from bluegreen.app.chaos.faults import Injector
from bluegreen.app.chaos.load import BlueLoad, LoadOptions
from bluegreen.app.chaos.report import ChaosReport, RunRecord, summary_line
from bluegreen.app.chaos.schedule import ALL_KINDS, Fault, Kind, Phase, plan
from bluegreen.app.chaos.services import ServiceSet
from bluegreen.app.chaos.snapshot_watch import SnapshotWatch
from bluegreen.app.scratch import isolated
from bluegreen.app.stack.local import LocalStack
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from schemas.catalog.seed_load import load_seed

__all__ = [
    "ChaosOptions",
    "ChaosReport",
    "RunRecord",
    "check_local_stack",
    "run_many",
    "run_one",
    "summary_line",
]

Echo = Callable[[str], None]
_TICK_S = 0.05
_SERVICES = ["cdc", "consume-0", "consume-1"]
_TASKS_PER_SNAPSHOT = 24  # small tasks: a snapshot fault lands between many claims
# For placing snapshot faults: a snapshot's workers spawn, take their snapshot (waiting
# for blue's open transactions) and produce P rows in about P / 12,000 s on 2 cores.
_SNAPSHOT_ROWS_PER_S = 12_000
_MIN_SNAPSHOT_S = 1.5


@dataclass(frozen=True)
class ChaosOptions:
    products: int
    write_seconds: float = 45.0
    kinds: tuple[Kind, ...] = ALL_KINDS
    profile: str = "adversarial"
    converge_timeout_s: float = 60.0
    evidence_dir: Path = Path(".bluegreen/chaos")
    rotation: int = 2  # guaranteed faults per run (see schedule.plan)
    extras_max: int = 2
    min_cdc_window_s: float = 10.0
    snapshot_timeout_s: float = 300.0
    big_rows: int | None = None  # the one large transaction; None: min(20,000, products/3)

    @property
    def large_transaction_rows(self) -> int:
        if self.profile != "adversarial":
            return 0
        return self.big_rows if self.big_rows is not None else min(20_000, self.products // 3)


def check_local_stack(settings: Settings) -> LocalStack:
    """Chaos kills the stack's own processes: refuse anything but a running local stack."""
    stack = LocalStack(settings.stack)
    for color in ("blue", "green", "control"):
        port = urlsplit(getattr(settings, f"{color}_dsn").get_secret_value()).port
        if port != getattr(settings.stack, f"{color}_port"):
            raise BluegreenError(
                f"bluegreen chaos kills and restarts the local stack's processes: the {color} "
                f"DSN must point at `bluegreen stack`'s {color} cluster (port "
                f"{getattr(settings.stack, f'{color}_port')}), not at port {port}"
            )
    if settings.kafka.bootstrap_servers != stack.kafka.bootstrap:
        raise BluegreenError(
            "bluegreen chaos kills and restarts the local broker: the Kafka bootstrap servers "
            f"must be the local stack's {stack.kafka.bootstrap}"
        )
    stack.require_running()
    return stack


def run_many(
    settings: Settings,
    *,
    runs: int,
    seed: int,
    options: ChaosOptions,
    keep_going: bool,
    echo: Echo,
) -> ChaosReport:
    started = time.monotonic()
    stack = check_local_stack(settings)
    report = ChaosReport(seed, options.products, options.write_seconds)
    for index in range(runs):
        record = run_one(settings, stack, seed + index, options, echo)
        report.runs.append(record)
        report.seconds = time.monotonic() - started
        echo(summary_line(record))
        if not record.ok and not keep_going:
            echo("stopping at the first failing run (--keep-going runs them all)")
            break
    return report


def run_one(
    settings: Settings, stack: LocalStack, seed: int, options: ChaosOptions, echo: Echo
) -> RunRecord:
    started = time.monotonic()
    record = RunRecord(seed=seed, products=options.products)
    schedule = plan(seed, options.kinds, rotation=options.rotation, extras_max=options.extras_max)
    record.schedule = [f.as_dict() for f in schedule]
    echo(f"run seed={seed}, {options.products:,} blue rows, schedule:")
    for fault in schedule:
        echo(f"  - {fault.describe()}")
    if not schedule:
        echo("  - no faults")
    folder = options.evidence_dir / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    name = f"s{seed}_{uuid.uuid4().hex[:6]}"
    with isolated(settings, name, prefix="chaos") as scratch:
        tasks_size = max(100, math.ceil(options.products / _TASKS_PER_SNAPSHOT))
        own = scratch.model_copy(
            update={
                "consumer": scratch.consumer.model_copy(update={"group_id": f"chaos.{name}"}),
                "snapshot": scratch.snapshot.model_copy(update={"chunk_size": tasks_size}),
            }
        )
        run = _Run(
            own,
            stack=stack,
            seed=seed,
            options=options,
            schedule=schedule,
            folder=folder,
            echo=echo,
            record=record,
        )
        try:
            run.execute()
        except Exception as exc:  # noqa: BLE001 - a harness failure is a failed run, with evidence
            record.failures.append(f"harness error: {type(exc).__name__}: {exc}")
            (folder / "harness-error.txt").write_text(traceback.format_exc())
        finally:
            run.shutdown()
        record.ok = not record.failures
        record.seconds = round(time.monotonic() - started, 1)
        if record.ok:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            record.evidence = str(folder)
            run.keep_evidence()
    return record


class _Run:
    def __init__(
        self,
        settings: Settings,
        *,
        stack: LocalStack,
        seed: int,
        options: ChaosOptions,
        schedule: list[Fault],
        folder: Path,
        echo: Echo,
        record: RunRecord,
    ) -> None:
        self.settings = settings
        self.stack = stack
        self.seed = seed
        self.options = options
        self.schedule = schedule
        self.folder = folder
        self.echo = echo
        self.record = record
        self.phase = "setup"
        self._t0: float | None = None
        self.snapshot = SnapshotWatch(settings)
        self._workers_seen: float | None = None  # when the first snapshot worker appeared
        self.services = ServiceSet(
            settings,
            folder / "logs",
            clock=self.clock,
            phase=lambda: self.phase,
            snapshot_done=self.snapshot.done,
            notify=echo,
        )
        self.injector = Injector(
            stack,
            self.services,
            clock=self.clock,
            tick=self.tick,
            snapshot_done=self.snapshot.done,
            notify=echo,
        )
        rng = random.Random(f"load-{seed}")  # noqa: S311 - a test schedule
        self.load = BlueLoad(
            settings.blue_dsn,
            seed,
            LoadOptions(
                profile=options.profile,
                big_rows=options.large_transaction_rows,
                big_at_s=rng.uniform(0.2, 0.6) * options.write_seconds,
            ),
        )
        self.differences: list[check.Difference] = []
        self.verify_skus: list[str] = []

    # -- time and the watch -----------------------------------------------------------------------

    def clock(self) -> float:
        """Seconds since the writes started (0 before)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def tick(self, seconds: float) -> None:
        """Wait, noticing services that exit and restarting what is due meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.services.watch()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_TICK_S, left))

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            self.tick(_TICK_S)
        return True

    # -- the run ----------------------------------------------------------------------------------

    def execute(self) -> None:
        record, options = self.record, self.options
        load_seed(self.settings.blue_dsn, options.products, self.seed, replace=True)
        self.services.start("cdc")
        if not self.wait_until(self._slot_active, 60):
            raise BluegreenError("bluegreen cdc did not start streaming within 60s")
        for name in _SERVICES[1:]:
            self.services.start(name)
        self.load.start()
        self._t0 = time.monotonic()
        self.phase = Phase.SNAPSHOT.value
        self.services.start("snapshot")
        for fault in (f for f in self.schedule if f.phase == Phase.SNAPSHOT):
            self.wait_until(self._reached(fault.at), options.snapshot_timeout_s)
            self._inject(fault)
        if not self.wait_until(self.snapshot.done, options.snapshot_timeout_s):
            record.failures.append(
                f"the snapshot did not complete in {options.snapshot_timeout_s}s"
            )
        record.snapshot_seconds = round(self.clock(), 1)
        self.phase = Phase.CDC.value
        window_start = self.clock()
        write_end = max(options.write_seconds, window_start + options.min_cdc_window_s)
        for fault in (f for f in self.schedule if f.phase == Phase.CDC):
            fire_at = window_start + fault.at * (write_end - window_start)
            self.tick(max(0.0, fire_at - self.clock()))
            self._inject(fault)
        self.tick(max(0.0, write_end - self.clock()))
        self.quiet()

    def _reached(self, share: float) -> Callable[[], bool]:
        """A snapshot fault's moment: `share` of the snapshot's expected length after its
        first worker appeared, or `share` of its tasks COMPLETED, whichever comes first.

        Tasks complete in bursts (a worker confirms several at once when the broker acks
        them), and an undisturbed snapshot of 60,000 rows produces in 2-4 s: waiting on
        the share alone would often fire after the snapshot ended."""
        expected_s = max(_MIN_SNAPSHOT_S, self.options.products / _SNAPSHOT_ROWS_PER_S)

        def reached() -> bool:
            if self.snapshot.done() or self.snapshot.share() >= share:
                return True
            if self._workers_seen is None and self.services.snapshot_workers():
                self._workers_seen = time.monotonic()
            return (
                self._workers_seen is not None
                and time.monotonic() - self._workers_seen >= share * expected_s
            )

        return reached

    def _slot_active(self) -> bool:
        with db.connect(self.settings.blue_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (self.settings.cdc.slot,),
            ).fetchone()
        return bool(row and row[0])

    def _inject(self, fault: Fault) -> None:
        observed = ""
        if fault.phase == Phase.SNAPSHOT:
            completed, total = self.snapshot.tasks()
            observed = f"{completed}/{total} snapshot tasks completed"
        injected = self.injector.inject(fault, observed)
        self.record.faults.append(injected.as_dict())

    def quiet(self) -> None:
        record = self.record
        self.phase = "quiet"
        alive = self.load.alive
        self.load.finish()
        record.write_seconds = round(self.clock(), 1)
        if not alive:
            record.failures.append("the write load stopped early (see its errors)")
        started = time.monotonic()
        self.services.restore(_SERVICES)  # a crash-looping service gets one more chance
        if not self.snapshot.done() and self.services.pid("snapshot") is None:
            self.services.start("snapshot")
        self.converge(started)
        self.judge()

    def converge(self, started: float) -> None:
        """Poll until green equals transform(blue) and every partition is drained."""
        record, deadline = self.record, started + self.options.converge_timeout_s
        offsets: list[check.PartitionOffsets] = []
        while True:
            self.services.watch()
            try:
                self.differences = check.state_differences(self.settings)
                if not self.differences:
                    offsets = check.offsets(self.settings)
                    if offsets and all(p.drained for p in offsets):
                        record.converge_seconds = round(time.monotonic() - started, 1)
                        break
            except (psycopg.OperationalError, KafkaException) as exc:
                self.echo(f"  convergence check could not read: {exc}")  # and try again
            if time.monotonic() > deadline:
                break
            self.tick(0.5)
        record.differences = len(self.differences)
        record.differences_sample = [d.as_dict() for d in self.differences[:30]]
        offsets = offsets or check.offsets(self.settings)
        record.offsets = [{**asdict(p), "drained": p.drained} for p in offsets]
        record.offsets_drained = bool(offsets) and all(p.drained for p in offsets)

    def judge(self) -> None:
        record = self.record
        record.verify_differences, record.verify_sample = check.verify_report(self.settings)
        self.verify_skus = [str(d["sku"]) for d in record.verify_sample]
        record.dead_letters = check.dead_letters(self.settings)
        record.unexpected_exits = [e.as_dict() for e in self.services.unexpected]
        record.snapshot_exit_code = self.services.snapshot_exit
        record.load = self.load.stats.as_dict()
        record.ops = record.load.pop("ops")
        report.judge(
            record,
            self.differences,
            converge_timeout_s=self.options.converge_timeout_s,
            missing_ops=self.load.missing_ops(),
        )

    # -- the end of a run -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Always: stop writing, stop the services, leave the stack running."""
        self.load.finish(timeout_s=30)
        self.services.stop_all()
        self.snapshot.close()
        if not all(s.healthy for s in self.stack.status()):
            self.injector.restart_stack()

    def keep_evidence(self) -> None:
        skus = [d.sku for d in self.differences] + self.verify_skus
        report.keep_evidence(self.settings, self.folder, self.record, skus)
