"""Judging aggregates that keep changing: blue's writers are held off them for a moment.

Under live load a hot aggregate can change after every snapshot verify takes, so it is
never judged (``VerifyReport.unsettled``) and the cutover gate could never pass. For
the few left, a held round takes ``FOR SHARE`` row locks on their blue rows (READ
COMMITTED, bounded by ``lock_timeout``): an UPDATE or DELETE of those rows then waits
— it is held, it does not fail — until the round ends, about one fence round trip.

Why the round is exact: a writer of a locked row ended before the lock was granted, so
its commit record precedes the WAL position read next (``pg_current_wal_lsn``), and
its commit is visible to the read that follows (a transaction leaves the proc array
before its row locks are released). The fence written after that position and applied
on every partition proves green holds those changes. Green is then read under the
same version rule as any round: an aggregate green holds at a version past the
position moved anyway — only a new row can, an INSERT takes no lock on existing rows —
and stays unsettled. A difference found here errs on the safe side: it refuses the
cutover, it never passes one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import psycopg
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from cutover.differences import Aggregate, VerifyReport
from cutover.verify import blue_aggregates, blue_query, classify, compare, keep_figures, verify
from schemas.domain import Domain
from schemas.envelope import Version
from schemas.lsn import parse_lsn

LOCK_TIMEOUT_MS = 2_000


def verify_holding(
    settings: Settings,
    domain: Domain,
    wait_for: Callable[[int], None],
    *,
    only: Collection[Any] | None = None,
    rounds: int = 3,
) -> VerifyReport:
    """``verify``, then up to `rounds` held rounds of whatever it left unsettled."""
    started = time.monotonic()
    whole = verify(settings, domain, wait_for=wait_for, only=only, rounds=rounds)
    report = whole
    for attempt in range(1, rounds + 1):
        if not report.unsettled:
            break
        try:
            report, differing = held_round(settings, domain, report.unsettled, wait_for)
        except psycopg.errors.LockNotAvailable:
            get_logger(component="verify").warning(
                "blue's rows of the moving aggregates stayed locked; they remain unsettled",
                aggregates=len(report.unsettled),
                lock_timeout_ms=LOCK_TIMEOUT_MS,
            )
            break
        report.rounds = whole.rounds + attempt
        classify(report, differing, domain)
    keep_figures(report, whole)
    report.seconds = time.monotonic() - started
    return report


def held_round(
    settings: Settings, domain: Domain, keys: Collection[Any], wait_for: Callable[[int], None]
) -> tuple[VerifyReport, list[Aggregate]]:
    """One round over `keys` with their blue rows locked against updates and deletes."""
    source = domain.source
    lock = sql.SQL("SELECT 1 FROM {} WHERE {}::text = ANY(%s::text[]) FOR SHARE").format(
        source.table_sql, sql.Identifier(source.aggregate_key)
    )
    with db.connect(settings.blue_dsn, options="-c DateStyle=ISO -c TimeZone=UTC") as blue:
        try:
            blue.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT_MS))
            )
            blue.execute(lock, (sorted(map(str, keys)),))
            row = blue.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            held_at = Version(parse_lsn(row[0]), 0)
            rows = blue.execute(blue_query(domain, keys)).fetchall()
            wait_for(held_at.lsn)
            aggregates = blue_aggregates(rows, domain)
            return compare(settings, domain, aggregates, held_at, only=keys)
        finally:
            blue.rollback()  # the writers held off these rows go on
