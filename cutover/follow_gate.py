"""The verification gate in seconds: the continuous verifier's watermark covers the fence.

The lag gate proved green applied fence ``F``. When a verifier (``cutover.follow``) is
running on this green — its heartbeat is fresh — the gate waits for a watermark at or
past ``F``: every aggregate is then verified equal at a blue snapshot taken after ``F``,
except the ones the state lists. Any aggregate listed as different fails the gate.
The ones still moving at the watermark are verified here, and only they, with blue's
writers held off them if they keep moving (``cutover.verify_hold``). The cost no longer
grows with the catalog: it is a watermark read and a handful of aggregates.
"""

from __future__ import annotations

import time

from bluegreen.core import db
from bluegreen.core.config import Settings
from cutover import fence, follow_state
from cutover.differences import VerifyReport
from cutover.follow_state import FollowState
from cutover.gate import Gate
from cutover.verify_hold import verify_holding
from schemas.domain import Domain

FRESH_S = 15.0  # a verifier whose heartbeat is older is not running (or stuck in a full pass)
COVER_WAIT_S = 10.0  # at most this long for the watermark to pass the fence


def followed(
    settings: Settings, domain: Domain, at: fence.Fence, timeout_s: float
) -> tuple[Gate, VerifyReport | None] | None:
    """The gate from the verifier's state; None when no verifier is running."""
    name = "verification clean"
    started = time.monotonic()
    state = _state(settings)
    if state is None or state.heartbeat_age_s > FRESH_S:
        return None
    deadline = started + min(timeout_s, COVER_WAIT_S)
    while state.watermark_lsn < at.lsn:
        if time.monotonic() > deadline:
            figure = (
                f"the continuous verifier's watermark did not reach fence {at.fence_id} within "
                f"{COVER_WAIT_S:.0f}s (it stands {state.watermark_age_s:.1f}s old)"
            )
            return Gate(name, False, figure), None
        time.sleep(0.05)
        current = _state(settings)
        if current is None:
            return None
        state = current
    covered = f"watermark covers fence {at.fence_id} (age {state.watermark_age_s:.1f}s)"
    if state.differing:
        sample = ", ".join(state.differing[:10])
        figure = f"{covered}; {len(state.differing)} SKUs differ: {sample}"
        return Gate(name, False, figure), None
    report = VerifyReport(snapshot_lsn=state.watermark_lsn, skus=state.full_pass_skus)
    moving = ""
    if state.pending:
        checked = time.monotonic()
        report = verify_holding(
            settings, domain, fence.waiter(settings, timeout_s), only=state.pending
        )
        moving = (
            f"; {len(state.pending)} SKUs moving at it re-verified in "
            f"{time.monotonic() - checked:.2f}s: {len(report.differences)} differences"
        )
        if report.unsettled:
            moving += f", {len(report.unsettled)} still changing"
        report.skus = state.full_pass_skus
    report.seconds = time.monotonic() - started
    figure = (
        f"{covered}, 0 SKUs differ{moving} (continuous verification, last full pass "
        f"{state.full_pass_skus:,} SKUs)"
    )
    return Gate(name, report.clean, figure), report


def _state(settings: Settings) -> FollowState | None:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        return follow_state.read(conn)
