"""Continuous verification (`bluegreen verify --follow`): verify everything once, then
exactly the aggregates the change stream touches, as they are applied.

A long-lived service of its own rather than a mode of the consumer: it reads blue (a
snapshot per cycle) and both sides' rows, work the apply path must not wait for, and
it is stopped, restarted or left out without touching the pipeline. The applier's
only part is cheap: one row of touched keys per batch (``consumers.touched``).

The watermark, the mechanism behind the cutover gate in seconds. One cycle:

1. take a consistent snapshot of blue at LSN ``S`` (a temporary slot's, as verify's);
2. wait until green applied a fence written after ``S`` on every partition: green now
   holds every blue change before ``S``, and the queue names every aggregate those
   changes touched since the last cycle;
3. read the queue; re-verify those aggregates, plus the ones still moving or different
   at the last watermark, against blue at ``S``;
4. in one green transaction, delete exactly the queue rows read and record watermark
   ``S`` with the aggregates still moving (green holds a version past ``S``) and the
   ones that differ.

So at watermark ``S`` every aggregate is verified equal to transform(blue) at ``S``,
except the listed ones: one not re-verified was not touched since it last was. A key
changed in green outside the pipeline (a bug, a hand edit) is not in the queue; the
sweep finds it: each cycle also re-verifies the next slice of the key space, so the
whole catalog is compared again every few minutes at most (``sweep_keys`` a cycle).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from bluegreen import control
from bluegreen.control import WriteRoute
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import VerifyMetrics
from bluegreen.core.retry import one_line
from consumers import touched
from cutover import fence, follow_state
from cutover.differences import VerifyReport
from cutover.follow_parts import Sweep, VerifierLock
from cutover.verify import blue_aggregates, blue_query, blue_snapshot, classify, compare, verify
from producers.snapshot.reader import BlueSnapshot
from schemas.domain import Domain

_SAMPLE = 100  # differences kept in the state, as a sample


@dataclass
class CycleReport:
    watermark_lsn: int
    rechecked: int  # aggregates re-verified
    swept: int  # aggregates of the sweep's slice
    pending: int
    differing: int
    seconds: float
    full_pass: bool = False
    keys: frozenset[str] = frozenset()  # what a cycle re-verified (not a full pass's)


def recheck(
    settings: Settings, domain: Domain, snapshot: BlueSnapshot, keys: Collection[str]
) -> VerifyReport:
    """Verify `keys` against blue at `snapshot` (green must hold every change before it),
    differences and moving aggregates classified."""
    if not keys:
        return VerifyReport(snapshot_lsn=snapshot.version.lsn)
    blue = blue_aggregates(snapshot.stream(blue_query(domain, keys)), domain)
    report, differing = compare(settings, domain, blue, snapshot.version, only=keys)
    classify(report, differing, domain)
    return report


def to_recheck(
    state: follow_state.FollowState, queued: set[str] | None, left: int, max_keys: int
) -> set[str] | None:
    """What a recheck past watermark `state` covers: the aggregates queued since it and
    those moving or different at it. None when only a full verification will do: a
    TRUNCATE was queued, or more than `max_keys` (the snapshot's backlog) — every queue
    row must be read for a watermark to hold."""
    if queued is None or left or len(queued) > max_keys:
        return None
    return queued | set(state.pending) | set(state.differing)


class Follower:
    def __init__(
        self,
        settings: Settings,
        domain: Domain,
        metrics: VerifyMetrics,
        *,
        interval_s: float = 1.0,
        max_keys: int = 20_000,
        sweep_keys: int = 2_000,
        fence_timeout_s: float = 120.0,
    ) -> None:
        self.settings, self.domain, self.metrics = settings, domain, metrics
        self.interval_s, self.max_keys, self.sweep_keys = interval_s, max_keys, sweep_keys
        self.fence_timeout_s = fence_timeout_s
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.log = get_logger(service="verify-follow")
        self._tables = False
        self._lock = VerifierLock(settings.green_dsn, self.stop)
        self._paused = False
        self._sweep = Sweep(domain, sweep_keys)
        self._watermark_at = time.time()
        metrics.watermark_age_seconds.set_function(lambda: time.time() - self._watermark_at)

    def run(self) -> None:
        """Cycle until stopped. A failed cycle (blue, green or Kafka away, a fence late)
        records nothing: the queue rows stay, the watermark stays; it is logged in one
        line and the next cycle, after a backoff, starts over."""
        backoff = self.interval_s
        resumed = False
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if not resumed:
                    self._resume()
                    resumed = True
                self.cycle()
                backoff = self.interval_s
            except (psycopg.Error, BluegreenError) as exc:
                self.log.warning(
                    "verification cycle failed; retrying",
                    cause=one_line(exc),
                    retry_in_s=round(backoff, 1),
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _ensure_tables(self) -> None:
        if not self._tables:
            touched.create_table(self.settings.green_dsn)
            follow_state.create_table(self.settings.green_dsn)
            self._tables = True

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _resume(self) -> None:
        self._ensure_tables()
        with db.connect(self.settings.green_dsn, autocommit=True) as conn:
            state = follow_state.read(conn)
        if state is not None:
            self._watermark_at = state.watermark_at.timestamp()
            self.log.info("resuming", watermark_lsn=state.watermark_lsn, pending=len(state.pending))

    def full_pass(self) -> CycleReport:
        """Verify every aggregate; the queue rows committed before it are covered by it."""
        started = time.monotonic()
        self._ensure_tables()
        route = self._writes_on_blue()
        if route is None:
            return CycleReport(0, 0, 0, 0, 0, 0.0)
        lock = self._lock.hold()
        with lock.transaction():
            touched.clear_through(lock)
        taken_at = datetime.now(UTC)
        report = verify(
            self.settings, self.domain, wait_for=fence.waiter(self.settings, self.fence_timeout_s)
        )
        if self._writes_on_blue() != route:
            return CycleReport(0, 0, 0, 0, 0, 0.0)  # see cycle(): judge nothing
        with lock.transaction():
            follow_state.write(
                lock,
                **self._outcome(report, taken_at),
                verified=report.skus,
                follower=self.name,
                full_pass=(report.skus, report.seconds, report.products + report.listings),
            )
        rows_per_s = report.skus / report.seconds if report.seconds else 0.0
        self.metrics.full_pass_rows_per_second.set(rows_per_s)
        self.log.info(
            "full pass",
            skus=report.skus,
            seconds=round(report.seconds, 2),
            skus_per_second=round(rows_per_s),
            differing=len(report.differences),
            pending=len(report.unsettled),
        )
        return self._observe(report, started, taken_at, rechecked=report.skus, swept=0, full=True)

    def cycle(self) -> CycleReport:
        started = time.monotonic()
        self._ensure_tables()
        self._lock.hold()
        with db.connect(self.settings.green_dsn, autocommit=True) as conn:
            state = follow_state.read(conn)
        if state is None:
            return self.full_pass()
        route = self._writes_on_blue()
        if route is None:
            return CycleReport(state.watermark_lsn, 0, 0, len(state.pending), 0, 0.0)
        snapshot = blue_snapshot(self.settings, self.domain)
        try:
            taken_at = datetime.now(UTC)
            version = snapshot.version
            fence.waiter(self.settings, self.fence_timeout_s)(version.lsn)
            with db.connect(self.settings.green_dsn, autocommit=True) as conn:
                ids, queued, left = touched.read(conn, limit=self.max_keys)
                sweep = self._sweep.next_slice(conn, snapshot)
            rechecked = to_recheck(state, queued, left, self.max_keys)
            if rechecked is None:
                snapshot.close()
                return self.full_pass()
            keys = rechecked | set(sweep)
            report = recheck(self.settings, self.domain, snapshot, keys)
        finally:
            snapshot.close()
        if self._writes_on_blue() != route:
            # Writes moved while we compared: green may hold changes made on green that
            # blue has not yet (no version marks them); judge nothing of this cycle.
            return CycleReport(state.watermark_lsn, 0, 0, len(state.pending), 0, 0.0)
        lock = self._lock.hold()
        with lock.transaction():
            touched.delete(lock, ids)
            follow_state.write(
                lock, **self._outcome(report, taken_at), verified=len(keys), follower=self.name
            )
        done = self._observe(report, started, taken_at, rechecked=len(rechecked), swept=len(sweep))
        done.keys = frozenset(keys)
        return done

    def _writes_on_blue(self) -> WriteRoute | None:
        """The write route while blue owns writes unpaused, else None. Forward verification
        compares green with transform(blue) by the versions blue's changes carry; a write
        made on green carries none, so while green owns writes (or they are moving) the
        verifier pauses. Keys written on green are re-snapshotted from blue when writes
        come back (`bluegreen rollback --writes`), and so reach the queue."""
        with db.connect(self.settings.control_dsn, autocommit=True) as conn:
            route = control.write_route(conn) if control.migration_exists(conn) else None
        if route is None:
            return WriteRoute("blue", 0, False, 0)  # no write router yet: writes are on blue
        if route.color != "blue" or route.paused:
            if not self._paused:
                self.log.info("writes are not on blue: forward verification paused")
            self._paused = True
            return None
        self._paused = False
        return route

    def _outcome(self, report: VerifyReport, taken_at: datetime) -> dict[str, Any]:
        differences = report.differences
        return {
            "watermark_lsn": report.snapshot_lsn,
            "watermark_at": taken_at,
            "pending": sorted(report.unsettled),
            "differing": sorted({d.sku for d in differences}),
            "differences": [d.__dict__ for d in differences[:_SAMPLE]],
        }

    def _observe(
        self,
        report: VerifyReport,
        started: float,
        taken_at: datetime,
        *,
        rechecked: int,
        swept: int,
        full: bool = False,
    ) -> CycleReport:
        done = CycleReport(
            watermark_lsn=report.snapshot_lsn,
            rechecked=rechecked,
            swept=swept,
            pending=len(report.unsettled),
            differing=len({d.sku for d in report.differences}),
            seconds=time.monotonic() - started,
            full_pass=full,
        )
        self._watermark_at = taken_at.timestamp()
        self.metrics.keys_verified.inc(rechecked + swept)
        self.metrics.keys_pending.set(done.pending)
        self.metrics.differences.set(done.differing)
        if done.differing:
            self.log.warning(
                "green differs",
                aggregates=done.differing,
                sample=[d.sku for d in report.differences[:5]],
            )
        return done
