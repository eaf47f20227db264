"""Shadowed reads: a sample of the router's keyed reads mirrored to the other color in
the background, and the two answers compared through the transform.

The caller's read (``TrafficRouter.read``) offers its key and answer here and returns;
one comparer thread reads the same aggregate on the other color, compares
(``cutover.shadow_compare``) and counts. A difference is read again on both colors
(``shadow.recheck_attempts`` times, ``recheck_delay_s`` apart) before it counts: green
trails blue by the replication lag, and a read that raced a change is not a mismatch.
A mismatch is logged as one line (key, tables and fields; values unless masked). The
counts go to the control database about once a second (``control.record_shadow_counts``)
for the cutover gate in another process, and to Prometheus when metrics are given.

Guarantees, and what gives them:
- The caller's answer is never changed: it is returned as read; the comparer reads its
  own copy of the rows (tuples) and nothing it does reaches the caller (every failure
  of a shadow is counted as failed on the comparer thread, never raised).
- The caller's latency is not affected: ``offer`` is one random draw and a
  ``Queue.put_nowait`` (never blocks; a full queue drops the shadow and counts it);
  reads, rechecks and flushes run on the comparer thread with its own connections,
  never the caller's pools; a failing shadow read is counted, never raised.
- Memory is bounded: the queue holds at most ``shadow.queue_size`` reads, and so does
  the list of differences waiting for their recheck (the comparer goes on with new
  reads meanwhile; a difference finding it full is dropped and counted); counts are
  four integers; mismatches are logged, not kept.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import psycopg
from pydantic import SecretStr

from bluegreen import control
from bluegreen.control import ShadowCounts
from bluegreen.core import db
from bluegreen.core.config import ShadowSettings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import ShadowMetrics
from cutover.aggregate_read import Answer, read_aggregate
from cutover.shadow_compare import Mismatch, compare
from schemas.domain import Domain

OTHER = {"blue": "green", "green": "blue"}
_WARN_EVERY_S = 10.0  # at most one warning line per kind per interval: a down color must not flood


@dataclass(frozen=True)
class Job:
    key: str
    color: str  # the color that served the caller
    answer: Answer


@dataclass(frozen=True)
class Recheck:
    due: float  # time.monotonic()
    attempt: int  # 1 for the first recheck
    job: Job


class ShadowReads:
    """The sampler, the bounded queue and the comparer thread of one read router."""

    def __init__(
        self,
        domain: Domain,
        dsns: dict[str, SecretStr],
        control_dsn: SecretStr,
        client_id: str,
        settings: ShadowSettings,
        *,
        ratio: float | None = None,
        metrics: ShadowMetrics | None = None,
    ) -> None:
        missing = set(OTHER) - set(dsns)
        if missing:
            raise BluegreenError(f"shadowed reads need both colors' DSNs; missing {missing}")
        self.domain = domain
        self.settings = settings
        self.ratio = settings.ratio if ratio is None else ratio  # may be changed live
        self._dsns = dsns
        self._control_dsn = control_dsn
        self._client_id = client_id
        self._metrics = metrics
        self._log = get_logger(component="shadow-reads", client=client_id)
        # Bounded: at most queue_size reads wait; offer() never blocks on it.
        # (None: a wake-up for close, never counted.)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._counts = ShadowCounts()
        self._recorded = ShadowCounts()  # what the control database holds of ours
        self._flushed_at = time.monotonic()
        self._warned: dict[str, float] = {}
        self._conns: dict[str, psycopg.Connection] = {}
        # Differences waiting to be read again, in due order (one delay for all): the
        # comparer goes on with new reads meanwhile. Bounded by queue_size as well.
        self._rechecks: deque[Recheck] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow-reads", daemon=True)
        self._thread.start()

    @property
    def counts(self) -> ShadowCounts:
        with self._lock:
            return self._counts

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, key: str, color: str, answer: Answer) -> None:
        """Maybe shadow this read: never blocks, never raises into the caller."""
        ratio = self.ratio
        if ratio <= 0 or self._stop.is_set():
            return
        if ratio < 1 and random.random() >= ratio:  # noqa: S311 - sampling, not cryptography
            return
        copy = {table: list(rows) for table, rows in answer.items()}  # rows are tuples
        try:
            self._queue.put_nowait(Job(key, color, copy))
        except queue.Full:
            self._count(dropped=1)  # a lock held for an addition, never across I/O

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the comparer (reads still queued or awaiting a recheck count as dropped)
        and flush the counts."""
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue wakes the comparer anyway
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)

    # -- the comparer thread ---------------------------------------------------------------

    def _run(self) -> None:
        interval = self.settings.flush_interval_s
        try:
            while not self._stop.is_set():
                wait = interval
                if self._rechecks:  # never later than the first recheck due
                    wait = min(wait, max(0.0, self._rechecks[0].due - time.monotonic()))
                try:
                    job: Job | None = self._queue.get(timeout=wait)
                except queue.Empty:
                    job = None
                if job is not None:
                    self._judge(job, self._judge_first(job))
                while self._rechecks and self._rechecks[0].due <= time.monotonic():
                    self._judge_recheck(self._rechecks.popleft())
                if time.monotonic() - self._flushed_at >= interval:
                    self._flush()
            left = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            unjudged = sum(1 for job in left if job is not None) + len(self._rechecks)
            self._count(dropped=unjudged)
            self._flush()
        finally:
            for conn in [*self._conns.values()]:
                conn.close()

    def _judge_first(self, job: Job) -> list[Mismatch] | None:
        return self._guarded(job, lambda: self._check(job))

    def _judge_recheck(self, recheck: Recheck) -> None:
        job = recheck.job
        mismatches = self._guarded(job, lambda: self._recheck(job))
        if mismatches is None:
            return
        if not mismatches:
            self._log.debug("shadow read settled on recheck", key=job.key, attempt=recheck.attempt)
        self._judge(job, mismatches, attempt=recheck.attempt)

    def _judge(self, job: Job, mismatches: list[Mismatch] | None, attempt: int = 0) -> None:
        """Count the comparison, or schedule its next recheck while attempts remain."""
        if mismatches is None:  # failed, counted
            return
        if mismatches and attempt < self.settings.recheck_attempts:
            if len(self._rechecks) >= self.settings.queue_size:  # bounded like the queue
                self._count(dropped=1)
                return
            due = time.monotonic() + self.settings.recheck_delay_s
            self._rechecks.append(Recheck(due, attempt + 1, job))
            return
        self._count(compared=1, mismatched=1 if mismatches else 0)
        if mismatches:
            self._log.warning(
                "shadow read mismatch",
                key=job.key,
                served_by=job.color,
                tables=sorted({m.table for m in mismatches}),
                differences=[m.describe() for m in mismatches],
            )

    def _guarded(self, job: Job, run: Callable[[], list[Mismatch]]) -> list[Mismatch] | None:
        """`run()`, or None with the failure counted: nothing a shadow does may end the
        comparer."""
        try:
            return run()
        except psycopg.Error as exc:  # _read dropped the broken connection
            self._count(failed=1)
            self._warn("read", "shadow read failed", key=job.key, error=str(exc).strip()[:200])
        except Exception as exc:  # noqa: BLE001 - counted and logged, as above
            self._count(failed=1)
            self._warn("compare", "shadow comparison failed", key=job.key, error=repr(exc)[:200])
        return None

    def _check(self, job: Job) -> list[Mismatch]:
        """The first comparison: the caller's answer against the other color's."""
        other = OTHER[job.color]
        return self._compare(job.key, {job.color: job.answer, other: self._read(other, job.key)})

    def _recheck(self, job: Job) -> list[Mismatch]:
        """Both colors read again, now."""
        return self._compare(job.key, {c: self._read(c, job.key) for c in ("blue", "green")})

    def _compare(self, key: str, answers: dict[str, Answer]) -> list[Mismatch]:
        mask = self.settings.mask_values
        return compare(self.domain, key, answers["blue"], answers["green"], mask=mask)

    def _read(self, color: str, key: str) -> Answer:
        conn = self._conns.get(color)
        if conn is None or conn.closed:
            conn = self._conns[color] = db.connect(self._dsns[color], autocommit=True)
        try:
            return read_aggregate(conn, self.domain, color, key)
        except psycopg.Error:
            self._conns.pop(color, None)
            conn.close()
            raise

    def _count(
        self, *, compared: int = 0, mismatched: int = 0, dropped: int = 0, failed: int = 0
    ) -> None:
        with self._lock:
            c = self._counts
            self._counts = replace(
                c,
                compared=c.compared + compared,
                mismatched=c.mismatched + mismatched,
                dropped=c.dropped + dropped,
                failed=c.failed + failed,
            )
        if self._metrics is not None:
            for counter, n in (
                (self._metrics.compared, compared),
                (self._metrics.mismatches, mismatched),
                (self._metrics.dropped, dropped),
                (self._metrics.failed, failed),
            ):
                if n:
                    counter.inc(n)

    def _flush(self) -> None:
        """Add what was counted since the last flush to the control database; on failure
        the difference stays and goes with the next flush."""
        self._flushed_at = time.monotonic()
        current = self.counts
        delta = current.minus(self._recorded)
        if delta.empty:
            return
        try:
            conn = self._conns.get("control")
            if conn is None or conn.closed:
                conn = self._conns["control"] = db.connect(self._control_dsn, autocommit=True)
            control.record_shadow_counts(conn, self._client_id, delta)
            self._recorded = current
        except psycopg.Error as exc:
            self._conns.pop("control", None)
            self._warn("flush", "shadow counts not recorded", error=str(exc).strip()[:200])

    def _warn(self, kind: str, message: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[kind] = now
            self._log.warning(message, **fields)
