"""`bluegreen demo`: the whole migration on the local stack, with a report.

From an empty stack: seed blue, start CDC and two consumers, keep a write load and
a read load through the traffic router (as the application's role), run the
snapshot, wait for the gates, cut over, roll back, cut over again; then, when the
reverse direction is installed, move writes to green, roll them back and move them
again under the same load; verify, and report the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bluegreen import control
from bluegreen.app.demo.app_writes import AppWriteLoad, missing
from bluegreen.app.demo.load import ReadLoad
from bluegreen.app.demo.report import DemoReport
from bluegreen.app.demo.services import ServiceProcess, latency_ms
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.kafka import delete_topics
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.progress import Reporter
from cutover import app_roles, fence, follow_state, switch, write_rollback, write_switch
from cutover.verify import verify
from cutover.verify_reverse import verify_reverse
from producers.blue_setup import drop_capture
from producers.reverse.setup import drop_reverse
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed

CDC_PORT, CONSUME_PORTS = 19461, (19462, 19472)
# Shadowed reads: the share of the readers' reads compared with the other color once
# green caught up, and the comparisons the cutover gate then wants (unless configured).
SHADOW_RATIO, SHADOW_GATE_MIN_COMPARED = 0.05, 20
REVERSE_PORTS = (19481, 19482)  # reverse-cdc, reverse-apply
FOLLOW_PORT = 19483  # verify --follow
_SETTLE_S = 5.0


def reset(settings: Settings) -> None:
    """Drop what a previous demo left: slots, publications, topics (both directions),
    green's and blue's sync state, the control state."""
    drop_capture(settings.blue_dsn, settings.cdc)
    drop_reverse(settings)  # green's reverse slot and publication
    topics = [settings.kafka.topic, settings.kafka.dlq_topic, settings.kafka.reverse_topic]
    delete_topics(settings.kafka, topics)
    with db.connect(settings.blue_dsn, autocommit=True) as conn:  # the reverse positions
        conn.execute("DROP SCHEMA IF EXISTS bluegreen_sync CASCADE")
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS catalog CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sync CASCADE")
    with db.connect(settings.control_dsn, autocommit=True) as conn:
        control.drop_schema(conn)


def _sample_skus(settings: Settings, count: int = 2000) -> list[str]:
    with db.connect(settings.blue_dsn) as conn:
        rows = conn.execute(
            "SELECT sku FROM legacy_product TABLESAMPLE SYSTEM (5) LIMIT %s", (count,)
        ).fetchall()
    return [r[0] for r in rows] or ["BG-0000001"]


def _cutover_until_ready(
    settings: Settings, attempts: int, timeout_s: float
) -> switch.CutoverReport:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return switch.cutover(settings, CATALOG, timeout_s=timeout_s)
        except switch.CutoverRefusedError as exc:
            last = exc
            get_logger(component="demo").info("cutover refused, waiting", reason=str(exc)[:300])
            time.sleep(3)
    raise BluegreenError(f"the gates never passed: {last}")


class Demo:
    """The demo's steps, in order; `shutdown` always runs and collects the figures."""

    def __init__(self, settings: Settings, products: int, write_rate: float, reporter: Reporter):
        self.settings = _with_shadow_gate(settings)
        self.products = products
        self.write_rate = write_rate
        self.reporter = reporter
        self.report = DemoReport(products=products)
        self.services: list[ServiceProcess] = []
        self.reads: ReadLoad | None = None
        self.writes: AppWriteLoad | None = None
        self.log = get_logger(component="demo")
        self.baseline: dict[str, str] = {}

    def step(self, note: str) -> None:
        self.reporter.note(note)
        self.log.info(note)

    def prepare(self) -> None:
        self.step("resetting the demo state")
        reset(self.settings)
        self.step(f"seeding {self.products:,} blue rows")
        load_seed(self.settings.blue_dsn, self.products, 42, replace=True)
        CATALOG.create_green(self.settings.green_dsn)
        assert CATALOG.reverse is not None
        with db.connect(self.settings.blue_dsn) as conn:  # the application's grants
            app_roles.grant_app(conn, [(SOURCE.schema, SOURCE.table)], write=True)
        with db.connect(self.settings.green_dsn) as conn:
            app_roles.grant_app(conn, list(CATALOG.reverse.tables), write=False)
        self.reporter.advance(1)

    def start_services(self) -> None:
        self.step("starting CDC and two consumers, a write load on blue, readers")
        log_dir = self.settings.stack.state_dir / "logs"
        cdc = ServiceProcess(self.settings, "cdc", ["cdc"], log_dir, CDC_PORT)
        self.services.append(cdc)
        cdc.wait_metrics()
        _wait_for_slot(self.settings)
        for index, port in enumerate(CONSUME_PORTS):
            consumer = ServiceProcess(self.settings, f"consume-{index}", ["consume"], log_dir, port)
            self.services.append(consumer)
        for service in self.services:
            service.wait_metrics()
        with db.connect(self.settings.control_dsn) as conn:
            control.ensure_schema(conn)
        skus = _sample_skus(self.settings)
        self.writes = AppWriteLoad(self.settings, self.write_rate, skus)
        self.writes.start()
        self.reads = ReadLoad(self.settings, skus)
        self.reads.start()
        self.reporter.advance(1)

    def snapshot(self) -> None:
        self.step("snapshot with 2 workers")
        snap = snapshot.SnapshotService(self.settings, CATALOG.source, Metrics()).run(2)
        if not snap.ok:
            raise BluegreenError(f"the snapshot did not complete: {snap}")
        self.report.snapshot_seconds = round(snap.seconds, 2)
        self.report.snapshot_rows_per_second = round(snap.rows_per_second)
        self.reporter.advance(1)

    def catch_up(self) -> None:
        self.step("catching up: waiting for lag zero end to end")
        started = time.monotonic()
        progress = fence.wait_applied(self.settings, fence.write(self.settings), timeout_s=1800)
        if not progress.done:
            raise BluegreenError(f"green did not catch up: behind on {progress.behind}")
        self.report.catch_up_seconds = round(time.monotonic() - started, 2)
        for service in self.services:
            service.check()
        self.start_reverse()
        self.follow()
        # Latency figures are for the live stream once caught up, not the snapshot's backlog:
        # the consumers record a batch's latencies after its commit, so let the batches that
        # carried the backlog be recorded before the baseline is taken.
        # Green holds what blue holds now: from here a shadowed read that differs is a defect.
        assert self.reads is not None
        self.reads.shadow(SHADOW_RATIO)
        time.sleep(_SETTLE_S)
        self.baseline = {s.name: s.metrics() for s in self.services}
        self.reporter.advance(1)

    def start_reverse(self) -> None:
        """The reverse direction's services, idle until writes move: started well before,
        so green's first writes do not wait for a process to start (seconds under load)."""
        log_dir = self.settings.stack.state_dir / "logs"
        for name, port in zip(("reverse-cdc", "reverse-apply"), REVERSE_PORTS, strict=True):
            service = ServiceProcess(self.settings, name, [name], log_dir, port)
            self.services.append(service)
            service.wait_metrics()

    def follow(self) -> None:
        """Start the continuous verifier and wait for its first full pass: from then on
        the cutover's verification gate reads its watermark."""
        self.step("continuous verification: the first full pass")
        log_dir = self.settings.stack.state_dir / "logs"
        follower = ServiceProcess(
            self.settings, "verify-follow", ["verify", "--follow"], log_dir, FOLLOW_PORT
        )
        self.services.append(follower)
        deadline = time.monotonic() + 1800
        while (state := _follow_state(self.settings)) is None:
            follower.check()
            if time.monotonic() > deadline:
                raise BluegreenError("the continuous verifier never finished its full pass")
            time.sleep(0.5)
        self.report.follow_full_pass_seconds = round(state.full_pass_seconds, 2)
        if state.full_pass_seconds:
            rate = state.full_pass_skus / state.full_pass_seconds
            self.report.follow_full_pass_skus_per_second = round(rate)

    def cutover_rollback_cutover(self) -> None:
        assert self.reads is not None
        self.step("cutover: gates, then reads to green")
        first = _cutover_until_ready(self.settings, attempts=10, timeout_s=300)
        self.report.cutover_gates_seconds = round(first.seconds, 2)
        self.report.cutover_switch_ms = round(_observed(self.reads, first.router), 1)
        self.reporter.advance(1)
        time.sleep(3)
        self.step("rollback: reads back to blue")
        router, _millis = switch.rollback(self.settings, reason="demo: rehearse the rollback")
        self.report.rollback_switch_ms = round(_observed(self.reads, router), 1)
        time.sleep(3)
        self.step("cutover again")
        second = _cutover_until_ready(self.settings, attempts=10, timeout_s=300)
        self.report.second_cutover_gates_seconds = round(second.seconds, 2)
        self.report.second_cutover_switch_ms = round(_observed(self.reads, second.router), 1)
        self.reporter.advance(1)
        time.sleep(3)

    def write_story(self) -> None:
        """Writes to green, back, and to green again, under the same load."""
        steps = (
            ("writes to green", "write_cutover_pause_ms", self._to_green),
            ("writes back to blue", "write_rollback_pause_ms", self._to_blue),
            ("writes to green again", "second_write_cutover_pause_ms", self._to_green),
        )
        for note, field_name, move in steps:
            self.step(note)
            setattr(self.report, field_name, self._held(move))
        self.reporter.advance(1)

    def _to_green(self) -> write_switch.WriteSwitchReport:
        return write_switch.cutover_writes(self.settings, CATALOG, timeout_s=300)

    def _to_blue(self) -> write_switch.WriteSwitchReport:
        return write_rollback.rollback_writes(self.settings, CATALOG)

    def _held(self, move: Callable[[], write_switch.WriteSwitchReport]) -> dict[str, float]:
        """Run one write switch and let the load run 3 s more; p99 and max of the holds
        the writers saw (a held write records its hold once released)."""
        assert self.writes is not None
        before = len(self.writes.holds.holds)
        report = move()
        self.log.info("write switch", **report.as_dict())
        time.sleep(3)
        holds = sorted(self.writes.holds.holds[before:]) or [0.0]
        p99 = holds[min(len(holds) - 1, int(0.99 * len(holds)))]
        return {"p99": round(p99 * 1000, 1), "max": round(holds[-1] * 1000, 1)}

    def verify(self) -> None:
        assert self.writes is not None
        self.writes.close()
        self.report.writes_total = self.writes.total
        self.report.blue_changes = self.writes.changes_by_color.get("blue", 0)
        self.report.writes_by_color = dict(self.writes.by_color)
        self.report.failed_writes = self.writes.failed
        for error in self.writes.errors:
            self.log.warning("failed write", error=error)
        self.step("final verification")
        # First: green's last writes reach blue (its fence), then blue's reach green.
        both = verify_reverse(self.settings, CATALOG)
        self.report.verify_reverse_differences = len(both.differences) + len(both.unsettled)
        fence.wait_applied(self.settings, fence.write(self.settings), timeout_s=300)
        self.report.lost_writes = len(missing(self.settings, self.writes.created))
        verified = verify(self.settings, CATALOG, wait_for=fence.waiter(self.settings, 300))
        self.report.verify_differences = len(verified.differences) + len(verified.unsettled)
        self.report.verify_seconds = round(verified.seconds, 2)
        self.report.verify_rows_per_second = round(verified.rows_per_second)
        consumers = [s for s in self.services if s.name.startswith("consume-")]
        self.report.cdc_latency_p50_ms, self.report.cdc_latency_p99_ms = latency_ms(
            consumers, self.baseline, "bluegreen_end_to_end_latency_seconds", skip_gone=True
        )
        self.report.capture_latency_p50_ms, self.report.capture_latency_p99_ms = latency_ms(
            self.services[:1], self.baseline, "bluegreen_cdc_commit_to_ack_seconds", skip_gone=True
        )
        reverse = [s for s in self.services if s.name == "reverse-apply"]
        self.report.reverse_latency_p50_ms, self.report.reverse_latency_p99_ms = latency_ms(
            reverse, self.baseline, "bluegreen_reverse_latency_seconds", skip_gone=True
        )
        _, self.report.batch_apply_p99_ms = latency_ms(
            consumers, self.baseline, "bluegreen_consumer_batch_apply_seconds", skip_gone=True
        )
        with db.connect(self.settings.control_dsn) as conn:
            self.report.final_phase = control.phase(conn).value
        self.reporter.advance(1)

    def shutdown(self) -> None:
        if self.writes is not None:
            self.writes.close()
        if self.reads is not None:
            self.reads.stop()
            stats = self.reads.stats
            self.report.reads_total, self.report.failed_reads = stats.total, stats.failed
            self.report.reads_by_color = dict(stats.by_color)
            shadowed = self.reads.shadow_counts()
            self.report.shadow_reads_compared = shadowed.compared
            self.report.shadow_mismatches = shadowed.mismatched
            self.report.shadow_reads_dropped = shadowed.dropped
            for error in stats.errors:
                self.log.warning("failed read", error=error)
        for service in reversed(self.services):
            service.stop()
            self.report.peak_rss_mb[service.name] = round(service.peak_rss_mb, 1)


def run(settings: Settings, products: int, *, write_rate: float, reporter: Reporter) -> DemoReport:
    started = time.monotonic()
    demo = Demo(settings, products, write_rate, reporter)
    try:
        demo.prepare()
        demo.start_services()
        demo.snapshot()
        demo.catch_up()
        demo.cutover_rollback_cutover()
        demo.write_story()
        demo.verify()
    finally:
        demo.shutdown()
    demo.report.total_seconds = round(time.monotonic() - started, 1)
    return demo.report


def _follow_state(settings: Settings) -> follow_state.FollowState | None:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        return follow_state.read(conn)


def _with_shadow_gate(settings: Settings) -> Settings:
    """The demo requires shadowed reads at its cutovers, unless a minimum is configured."""
    if settings.shadow.gate_min_compared:
        return settings
    shadow = settings.shadow.model_copy(update={"gate_min_compared": SHADOW_GATE_MIN_COMPARED})
    return settings.model_copy(update={"shadow": shadow})


def _wait_for_slot(settings: Settings, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (settings.cdc.slot,)
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise BluegreenError("the CDC service did not start streaming")


def _observed(reads: ReadLoad, router: control.Router | None) -> float:
    """Milliseconds from the router flip's commit until the last reader instance saw it."""
    if router is None:
        return float("nan")
    return reads.switch_ms(router.epoch, router.switched_at.timestamp())
