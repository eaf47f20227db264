"""`bluegreen cutover` and `bluegreen rollback`: move reads between blue and green.

Writes keep going to blue, and CDC keeps green in sync, so a rollback is just the
reverse flip of the read router: one audited transaction and a NOTIFY, over and
over if need be. A cutover flips only when every gate passes, unless forced with
a reason (audited).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bluegreen import control
from bluegreen.control import Phase, Router
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from cutover import gates, shadow_gate
from schemas.domain import Domain


class CutoverRefusedError(BluegreenError):
    """A gate failed; the message names each failing gate with its figure."""


@dataclass
class CutoverReport:
    gates: list[gates.Gate] = field(default_factory=list)
    switched: bool = False
    forced: bool = False
    router: Router | None = None
    seconds: float = 0.0
    switch_ms: float = 0.0  # the router flip: one transaction

    @property
    def passed(self) -> bool:
        return all(g.ok for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gates": [g.as_dict() for g in self.gates],
            "passed": self.passed,
            "switched": self.switched,
            "forced": self.forced,
            "color": self.router.color if self.router else None,
            "epoch": self.router.epoch if self.router else None,
            "seconds": round(self.seconds, 3),
            "switch_ms": round(self.switch_ms, 2),
        }


def evaluate(settings: Settings, domain: Domain, timeout_s: float) -> list[gates.Gate]:
    """Every gate, in order, each with its figure (none is skipped: a full picture)."""
    checks = [gates.snapshot_done(settings), gates.dlq_empty(settings, domain)]
    lag, applied = gates.lag_zero_at(settings, timeout_s)
    checks.append(lag)
    verified, _report = gates.verification_clean(
        settings, domain, timeout_s, at=applied if lag.ok else None
    )
    checks.append(verified)
    checks.append(shadow_gate.shadow_reads_matched(settings))
    return checks


def cutover(
    settings: Settings,
    domain: Domain,
    *,
    timeout_s: float,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
) -> CutoverReport:
    if force and not (reason and reason.strip()):
        raise BluegreenError("--force needs --reason: the audit trail must say why")
    started = time.monotonic()
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
    report = CutoverReport(gates=evaluate(settings, domain, timeout_s))
    report.seconds = time.monotonic() - started
    if dry_run:
        return report
    if not report.passed and not force:
        failing = "; ".join(f"{g.name}: {g.figure}" for g in report.gates if not g.ok)
        with db.connect(settings.control_dsn) as conn:
            control.audit(
                conn,
                "cutover refused",
                details={"gates": [g.as_dict() for g in report.gates]},
            )
        raise CutoverRefusedError(f"cutover refused — {failing}")
    with db.connect(settings.control_dsn) as conn:
        if report.passed:
            control.transition(conn, Phase.IN_SYNC, action="gates passed", strict=False)
        flip = time.monotonic()
        report.router = control.switch_reads(
            conn,
            "green",
            to_phase=Phase.READS_ON_GREEN,
            action="cutover (forced)" if force and not report.passed else "cutover",
            reason=reason,
            details={"gates": [g.as_dict() for g in report.gates]},
            force=force,
        )
        report.switch_ms = (time.monotonic() - flip) * 1000
    report.switched = True
    report.forced = force and not report.passed
    report.seconds = time.monotonic() - started
    return report


def rollback(settings: Settings, *, reason: str | None = None) -> tuple[Router, float]:
    """Reads back to blue: one audited transaction. Returns the router and milliseconds."""
    started = time.monotonic()
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        current = control.router(conn)
        if current.color == "blue":
            raise BluegreenError("reads are already on blue; nothing to roll back")
        router = control.switch_reads(
            conn, "blue", to_phase=Phase.ROLLED_BACK, action="rollback", reason=reason
        )
    return router, (time.monotonic() - started) * 1000
