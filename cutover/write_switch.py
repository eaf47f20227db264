"""`bluegreen cutover --writes`: move write ownership from blue to green, losing nothing.

One leg of the switch (``switch_leg``; ``write_rollback`` runs the mirror image):
1. pause writes at the routers (audited; routers hold new writes for at most the
   pause budget) and wait until every live router has seen the pause and its writes
   on the old owner have ended (``bluegreen.write_client`` heartbeats);
2. wait for the old owner's application transactions in flight to end
   (``pg_stat_activity``: the application role's sessions holding a transaction id,
   whatever client runs them), then SHARE-lock its application tables so no
   straggler can commit behind the fence (reads go on); past the budget, name what
   blocks and resume on the old owner;
3. write a fence into the old owner's WAL and wait until the other side applied it on
   every partition: every acknowledged write is on both colors;
4. what must exist before the new owner takes writes (green's reverse slot);
5. flip write ownership in the router record (one audited transaction);
6. REVOKE the application's writes on the old owner (in the locking transaction, so
   writers blocked on the lock are refused, not let through), GRANT on the new one;
7. resume writes (audited, with the pause's duration).
Steps 1-4 abort to the old owner when anything fails or the budget runs out; from 5 on
the switch always ends with writes resumed on the new owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import SecretStr

from bluegreen import control
from bluegreen.control import Phase
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from cutover import app_roles, fence, gates, switch
from producers.reverse import setup as reverse_setup
from schemas.domain import Domain, ReverseSpec

# The step that creates green's reverse publication and slot (tests pass a stand-in).
PrepareGreen = Callable[[Settings, ReverseSpec], Any]


class WriteSwitchAbortedError(BluegreenError):
    """The switch gave up before the flip; writes resumed on the old owner."""

    def __init__(self, report: WriteSwitchReport) -> None:
        self.report = report
        blockers = "; ".join(report.blockers)
        super().__init__(
            f"{report.direction} aborted at {report.aborted_at}: {report.why}"
            + (f" — blocking: {blockers}" if blockers else "")
            + f"; writes resumed on {report.owner}"
        )


@dataclass
class WriteSwitchReport:
    direction: str  # "write cutover" | "write rollback"
    owner: str = ""  # who owns writes at the end
    switched: bool = False
    aborted_at: str | None = None
    why: str | None = None
    blockers: list[str] = field(default_factory=list)
    gates: list[gates.Gate] = field(default_factory=list)
    steps_ms: dict[str, float] = field(default_factory=dict)
    pause_ms: float = 0.0  # paused -> resumed, as the switch saw it
    fence_id: str | None = None
    write_epoch: int | None = None
    refreshed_keys: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "owner": self.owner,
            "switched": self.switched,
            "aborted_at": self.aborted_at,
            "why": self.why,
            "blockers": self.blockers,
            "gates": [g.as_dict() for g in self.gates],
            "steps_ms": {k: round(v, 2) for k, v in self.steps_ms.items()},
            "pause_ms": round(self.pause_ms, 2),
            "fence_id": self.fence_id,
            "write_epoch": self.write_epoch,
            "refreshed_keys": self.refreshed_keys,
        }


@dataclass(frozen=True)
class Leg:
    """One direction of the switch: from the old owner to the new one."""

    name: str
    old: str
    new: str
    old_dsn: SecretStr
    old_tables: Sequence[app_roles.Table]
    new_dsn: SecretStr
    new_tables: Sequence[app_roles.Table]
    applier: fence.Applier
    pause_phase: Phase
    done_phase: Phase
    abort_phase: Phase
    before_flip: Callable[[], Any] | None = None
    refresh_pending: bool | None = None  # set with the flip (a rollback marks it)


class _Abort(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, step: str, why: str, blockers: list[str] | None = None) -> None:
        super().__init__(why)
        self.step, self.why, self.blockers = step, why, blockers or []


def parse_budget(text: str) -> float:
    """'1s', '500ms', '1.5' (seconds) -> seconds."""
    value = text.strip().lower()
    try:
        if value.endswith("ms"):
            seconds = float(value[:-2]) / 1000
        else:
            seconds = float(value.removesuffix("s"))
    except ValueError as exc:
        raise BluegreenError(f"--write-pause-budget {text!r}: say 1s, 500ms or 0.8") from exc
    if not 0.05 <= seconds <= 60:
        raise BluegreenError(f"--write-pause-budget {text!r} must be between 50ms and 60s")
    return seconds


def cutover_writes(
    settings: Settings,
    domain: Domain,
    *,
    budget_s: float = 1.0,
    timeout_s: float = 120.0,
    reason: str | None = None,
    prepare_green: PrepareGreen | None = None,
) -> WriteSwitchReport:
    """From reads-on-green with every read gate passing: writes to green."""
    report = preflight(settings, domain, timeout_s)
    return switch_to_green(
        settings, domain, report, budget_s=budget_s, reason=reason, prepare_green=prepare_green
    )


def preflight(settings: Settings, domain: Domain, timeout_s: float) -> WriteSwitchReport:
    """Refuse unless reads are on green, writes on blue and every gate passes (audited)."""
    if domain.reverse is None:
        raise BluegreenError(f"domain {domain.ref} has no reverse spec: writes stay on blue")
    report = WriteSwitchReport("write cutover", owner="blue")
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        current, state = control.phase(conn), control.write_state(conn)
    if current != Phase.READS_ON_GREEN or state.route.color != "blue":
        raise BluegreenError(
            f"the migration is {current.value} with writes on {state.route.color}; "
            "writes move to green only from reads-on-green (run `bluegreen cutover` first)"
        )
    report.gates = [*switch.evaluate(settings, domain, timeout_s), gates.refresh_done(settings)]
    if not all(g.ok for g in report.gates):
        failing = "; ".join(f"{g.name}: {g.figure}" for g in report.gates if not g.ok)
        with db.connect(settings.control_dsn) as conn:
            control.audit(
                conn,
                "write cutover refused",
                details={"gates": [g.as_dict() for g in report.gates]},
            )
        raise switch.CutoverRefusedError(f"write cutover refused — {failing}")
    return report


def switch_to_green(
    settings: Settings,
    domain: Domain,
    report: WriteSwitchReport,
    *,
    budget_s: float,
    reason: str | None = None,
    prepare_green: PrepareGreen | None = None,
) -> WriteSwitchReport:
    """The switch itself, after `preflight` (whose report it completes)."""
    spec = domain.reverse
    assert spec is not None  # preflight refused otherwise
    prepare = prepare_green or reverse_setup.prepare_green
    leg = Leg(
        name="write cutover",
        old="blue",
        new="green",
        old_dsn=settings.blue_dsn,
        old_tables=[(domain.source.schema, domain.source.table)],
        new_dsn=settings.green_dsn,
        new_tables=list(spec.tables),
        applier=fence.forward(settings),
        pause_phase=Phase.WRITES_SWITCHING,
        done_phase=Phase.WRITES_ON_GREEN,
        abort_phase=Phase.READS_ON_GREEN,
        before_flip=lambda: prepare(settings, spec),
    )
    return switch_leg(settings, leg, report, budget_s=budget_s, reason=reason)


def switch_leg(
    settings: Settings,
    leg: Leg,
    report: WriteSwitchReport,
    *,
    budget_s: float,
    reason: str | None,
) -> WriteSwitchReport:
    log = get_logger(component="write-switch")
    partitions = fence.partition_count(settings, leg.applier.topic)
    reserve = min(0.25, budget_s / 4)  # for the flip, the privileges and the resume
    started = time.monotonic()
    with db.connect(settings.control_dsn) as conn:
        paused = control.change_writes(
            conn,
            action=f"{leg.name}: writes paused",
            paused=True,
            budget_ms=int(budget_s * 1000),
            to_phase=leg.pause_phase,
            expect_color=leg.old,
            reason=reason,
        )
    paused_at = time.monotonic()
    deadline = paused_at + budget_s - reserve
    report.steps_ms["pause"] = (paused_at - started) * 1000
    log.info("writes paused", leg=leg.name, epoch=paused.route.epoch, budget_s=budget_s)
    flipped = False
    try:
        _await_routers(settings, paused.route.epoch, deadline, report)
        with db.connect(leg.old_dsn) as old:
            _drain(leg, old, deadline, report)
            _fence(settings, leg, deadline, partitions, report)
            if leg.before_flip is not None:
                _step(report, "before flip", leg.before_flip, deadline)
            with db.connect(settings.control_dsn) as conn:
                step = time.monotonic()
                flip = control.change_writes(
                    conn,
                    action=leg.name,
                    color=leg.new,
                    to_phase=leg.done_phase,
                    refresh_pending=leg.refresh_pending,
                    reason=reason,
                    details={"fence": report.fence_id, "steps_ms": report.steps_ms},
                )
                flipped = True
                report.write_epoch = flip.route.epoch
                report.steps_ms["flip"] = (time.monotonic() - step) * 1000
            step = time.monotonic()
            app_roles.set_writes(old, leg.old_tables, allowed=False)
            old.commit()  # the lock goes; writers blocked on it are refused now
        with db.connect(leg.new_dsn) as new:
            app_roles.grant_app(new, leg.new_tables, write=True)
        report.steps_ms["privileges"] = (time.monotonic() - step) * 1000
    except _Abort as abort:
        _resume(settings, leg, report, paused_at, abort=abort, reason=reason)
        raise WriteSwitchAbortedError(report) from None
    except BaseException as exc:
        if not flipped:
            why = _Abort("switch", f"{type(exc).__name__}: {str(exc).strip()[:300]}")
            _resume(settings, leg, report, paused_at, abort=why, reason=reason)
            raise
        _resume(settings, leg, report, paused_at, abort=None, reason=reason)
        raise
    _resume(settings, leg, report, paused_at, abort=None, reason=reason)
    return report


def _step(report: WriteSwitchReport, name: str, action: Callable[[], Any], deadline: float) -> None:
    step = time.monotonic()
    try:
        action()
    except Exception as exc:
        raise _Abort(name, f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
    report.steps_ms[name] = (time.monotonic() - step) * 1000
    if time.monotonic() > deadline:
        raise _Abort(name, f"{name} took {report.steps_ms[name]:.0f} ms: past the pause budget")


LIVE_WITHIN_S = 3.0  # a router whose heartbeat is older is gone (it polls every second)


def _await_routers(
    settings: Settings, epoch: int, deadline: float, report: WriteSwitchReport
) -> None:
    """Until every live router has seen the pause and ended its writes on the old owner."""
    step = time.monotonic()
    with db.connect(settings.control_dsn, autocommit=True) as conn:
        while lagging := control.lagging_clients(conn, epoch, LIVE_WITHIN_S):
            if time.monotonic() >= deadline:
                raise _Abort(
                    "routers",
                    f"{len(lagging)} router(s) did not confirm the pause within the budget",
                    [
                        f"router {c.client_id} at write epoch {c.seen_epoch}"
                        + ("" if c.drained else ", writes in flight")
                        for c in lagging
                    ],
                )
            time.sleep(0.003)
    report.steps_ms["routers"] = (time.monotonic() - step) * 1000


def _drain(leg: Leg, old: psycopg.Connection, deadline: float, report: WriteSwitchReport) -> None:
    """Wait for the old owner's application transactions in flight, then lock them out."""
    step = time.monotonic()
    with db.connect(leg.old_dsn, autocommit=True) as watch:
        while found := app_roles.writers(watch):
            if time.monotonic() >= deadline:
                raise _Abort(
                    "in-flight writes",
                    f"{len(found)} application transaction(s) on {leg.old} still open when the "
                    "pause budget ran out",
                    [w.describe() for w in found],
                )
            time.sleep(0.005)
        try:
            app_roles.lock_writes(old, leg.old_tables, max(0.001, deadline - time.monotonic()))
        except psycopg.errors.LockNotAvailable as exc:
            old.rollback()
            blockers = [w.describe() for w in app_roles.writers(watch)]
            why = f"the write lock on {leg.old} timed out"
            raise _Abort("in-flight writes", why, blockers) from exc
    report.steps_ms["in-flight writes"] = (time.monotonic() - step) * 1000


def _fence(
    settings: Settings, leg: Leg, deadline: float, partitions: int, report: WriteSwitchReport
) -> None:
    step = time.monotonic()
    written = fence.write(settings, leg.old_dsn)
    report.fence_id = written.fence_id
    progress = fence.wait_applied(
        settings, written, max(0.0, deadline - time.monotonic()), leg.applier, partitions
    )
    report.steps_ms["fence"] = (time.monotonic() - step) * 1000
    if not progress.done:
        raise _Abort(
            "fence",
            f"fence {written.fence_id} from {leg.old} applied on {len(progress.applied)}/"
            f"{progress.partitions} partitions within the pause budget (behind: "
            f"{progress.behind}); are the {leg.old}->{leg.new} services running?",
        )


def _resume(
    settings: Settings,
    leg: Leg,
    report: WriteSwitchReport,
    paused_at: float,
    *,
    abort: _Abort | None,
    reason: str | None,
) -> None:
    details: dict[str, Any] = {"steps_ms": report.steps_ms, "fence": report.fence_id}
    if abort is not None:
        report.aborted_at, report.why, report.blockers = abort.step, abort.why, abort.blockers
        details.update(aborted_at=abort.step, why=abort.why, blockers=abort.blockers)
    with db.connect(settings.control_dsn) as conn:
        state = control.change_writes(
            conn,
            action=f"{leg.name}: writes resumed" if abort is None else f"{leg.name} aborted",
            paused=False,
            to_phase=leg.abort_phase if abort is not None else None,
            reason=reason,
            details={**details, "pause_ms": round((time.monotonic() - paused_at) * 1000, 2)},
        )
    report.pause_ms = (time.monotonic() - paused_at) * 1000
    report.owner = state.route.color
    report.write_epoch = state.route.epoch
    report.switched = abort is None
