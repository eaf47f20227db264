"""The cutover gates: each answers, with its figure, whether reads may move to green."""

from __future__ import annotations

import psycopg

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings
from consumers import dlq
from cutover import fence, follow_gate
from cutover.gate import Gate
from cutover.verify import VerifyReport
from cutover.verify_hold import verify_holding
from schemas.domain import Domain

__all__ = [
    "Gate",
    "describe",
    "dlq_empty",
    "lag_zero",
    "lag_zero_at",
    "record",
    "refresh_done",
    "snapshot_done",
    "verification_clean",
]


def snapshot_done(settings: Settings) -> Gate:
    with db.connect(settings.control_dsn, autocommit=True) as conn:
        counts = control.task_counts(conn) if control.task_queue_exists(conn) else None
    if counts is None or counts.total == 0:
        return Gate("snapshot complete", False, "no snapshot was planned")
    states = counts.by_state
    done = states.get(control.State.COMPLETED, 0)
    total = counts.total
    ok = total > 0 and done == total
    figure = f"{done}/{total} tasks COMPLETED"
    others = {s: n for s, n in states.items() if s != control.State.COMPLETED and n}
    if others:
        figure += " (" + ", ".join(f"{n} {s}" for s, n in sorted(others.items())) + ")"
    return Gate("snapshot complete", ok, figure)


def dlq_empty(settings: Settings, domain: Domain) -> Gate:
    """No open dead letter, superseded ones aside: green already holds newer versions of
    every key those would touch."""
    name = "dead-letter queue empty"
    try:
        found = dlq.counts(settings.kafka, settings.consumer.group_id, settings.green_dsn, domain)
    except psycopg.Error as exc:
        waiting = dlq.open_count(settings.kafka, settings.consumer.group_id)
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Gate(
            name,
            False,
            f"{waiting} dead letters not replayed; cannot ask green which are superseded: {cause}",
        )
    figure = f"{found.open} open dead letters, {found.superseded} superseded"
    return Gate(name, found.open == 0, figure)


def lag_zero(settings: Settings, timeout_s: float) -> Gate:
    return lag_zero_at(settings, timeout_s)[0]


def lag_zero_at(settings: Settings, timeout_s: float) -> tuple[Gate, fence.Fence]:
    """The lag gate, and the fence it proved applied (the verification gate's point)."""
    written = fence.write(settings)
    progress = fence.wait_applied(settings, written, timeout_s)
    figure = (
        f"fence {written.fence_id} applied on {len(progress.applied)}/{progress.partitions} "
        f"partitions in {progress.seconds:.2f}s"
    )
    if not progress.done:
        figure += f"; behind: partitions {progress.behind}"
    return Gate("lag zero end to end", progress.done, figure), written


def verification_clean(
    settings: Settings, domain: Domain, timeout_s: float, at: fence.Fence | None = None
) -> tuple[Gate, VerifyReport | None]:
    """With the continuous verifier running, its watermark must cover the fence `at`
    with no aggregate different; only the aggregates still moving at the watermark are
    verified here (``cutover.follow_gate``). Without it: a full verification."""
    if at is not None:
        try:
            followed = follow_gate.followed(settings, domain, at, timeout_s)
        except fence.FenceTimeoutError as exc:
            return Gate("verification clean", False, f"could not verify: {exc}"), None
        if followed is not None:
            record(settings, followed[1])
            return followed
    try:
        report = verify_holding(settings, domain, fence.waiter(settings, timeout_s))
    except fence.FenceTimeoutError as exc:
        return Gate("verification clean", False, f"could not verify: {exc}"), None
    record(settings, report)
    figure = describe(report)
    if at is not None:
        figure += "; a full verification: no `bluegreen verify --follow` is running"
    return Gate("verification clean", report.clean, figure), report


def describe(report: VerifyReport) -> str:
    kinds: dict[str, int] = {}
    for difference in report.differences:
        kinds[difference.kind] = kinds.get(difference.kind, 0) + 1
    figure = f"{len(report.differences)} differences over {report.skus:,} SKUs"
    if kinds:
        figure += " (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
    if report.unsettled:
        figure += f", {len(report.unsettled)} SKUs still changing"
    return figure


def record(settings: Settings, report: VerifyReport) -> None:
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        try:
            control.record_verification(conn, report.as_dict())
        except psycopg.Error:
            conn.rollback()
            raise


def refresh_done(settings: Settings) -> Gate:
    """After a write rollback, the keys written on green were re-snapshotted from blue."""
    with db.connect(settings.control_dsn, autocommit=True) as conn:
        pending = control.migration_exists(conn) and control.write_state(conn).refresh_pending
    figure = (
        "keys written on green still await their re-snapshot (`bluegreen rollback --writes` "
        "did not finish it)"
        if pending
        else "nothing written on green awaits a refresh"
    )
    return Gate("green refreshed after write rollback", not pending, figure)
