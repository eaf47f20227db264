"""The verification gate in seconds: the continuous verifier's watermark, and only the
aggregates changed since it.

The continuous verifier (``cutover.follow``) keeps, in green, a watermark ``W`` with
the aggregates still moving or different at it, and consumes the applier's queue of
touched aggregates in the same transactions. So at any moment, every aggregate is
verified equal to transform(blue) at ``W`` or is named by the state or the queue.
The gate builds on that:

1. take a blue snapshot ``S`` after the lag gate's fence, and wait until green
   applied a fence written after ``S``;
2. read the verifier's state and the queue in one REPEATABLE READ transaction (the
   verifier deletes queue rows and moves the watermark atomically, so the pair is
   consistent whatever it does meanwhile);
3. re-verify exactly the aggregates named there against ``S``; those still moving
   are judged with blue's writers held off them (``cutover.verify_hold``).

The cost no longer grows with the catalog: it follows the changes since the last
cycle. Without a verifier that ran recently (its heartbeat), or with more queued
than a recheck is worth, the caller falls back to a full verification.
"""

from __future__ import annotations

import time

from bluegreen.core import db
from bluegreen.core.config import Settings
from consumers import touched
from cutover import fence, follow_state
from cutover.differences import VerifyReport
from cutover.follow import recheck, to_recheck
from cutover.gate import Gate
from cutover.verify import blue_snapshot, keep_figures
from cutover.verify_hold import verify_holding
from schemas.domain import Domain
from schemas.lsn import format_lsn

FRESH_S = 60.0  # a verifier silent for longer is not running (a full pass beats on finish)
MAX_KEYS = 20_000  # more changed aggregates than this: a full verification is cheaper


def followed(
    settings: Settings, domain: Domain, at: fence.Fence, timeout_s: float
) -> tuple[Gate, VerifyReport] | None:
    """The gate from the verifier's state; None when no verifier is running."""
    name = "verification clean"
    started = time.monotonic()
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        state = follow_state.read(conn)
    if state is None or state.heartbeat_age_s > FRESH_S:
        return None
    snapshot = blue_snapshot(settings, domain)
    try:
        assert snapshot.version.lsn >= at.lsn  # taken after the lag gate's fence
        fence.waiter(settings, timeout_s)(snapshot.version.lsn)
        with db.connect(settings.green_dsn) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            current = follow_state.read(conn)
            _ids, queued, left = touched.read(conn, limit=MAX_KEYS)
            conn.rollback()
        keys = None if current is None else to_recheck(current, queued, left, MAX_KEYS)
        if current is None or keys is None:
            return None
        report = recheck(settings, domain, snapshot, keys)
    finally:
        snapshot.close()
    held = ""
    if report.unsettled:
        moving = len(report.unsettled)
        report = verify_holding(
            settings, domain, fence.waiter(settings, timeout_s), only=report.unsettled
        )
        held = f", {moving} still moving judged with their writers held"
    whole = VerifyReport(snapshot_lsn=current.watermark_lsn, skus=current.full_pass_skus)
    keep_figures(report, whole)
    report.seconds = time.monotonic() - started
    figure = (
        f"{len(report.differences)} differences: watermark {format_lsn(current.watermark_lsn)} "
        f"({current.watermark_age_s:.1f}s old) and the {len(keys)} SKUs changed or listed "
        f"since, re-verified at {format_lsn(snapshot.version.lsn)} past fence {at.fence_id}"
        f"{held}, in {report.seconds:.2f}s (continuous verification; last full pass "
        f"{current.full_pass_skus:,} SKUs)"
    )
    if report.differences:
        figure += "; SKUs differ: " + ", ".join(sorted({d.sku for d in report.differences})[:10])
    if report.unsettled:
        figure += f"; {len(report.unsettled)} SKUs still changing"
    return Gate(name, report.clean, figure), report
