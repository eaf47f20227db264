"""`bluegreen rollback --writes`: write ownership back from green to blue, losing nothing.

The mirror image of ``write_switch.cutover_writes``: pause; wait for green's
application transactions in flight and lock them out; a fence into green's WAL
applied by blue's reverse applier on every partition of the reverse topic; flip
writes to blue (the phase back to reads-on-green); GRANT the application's writes on
blue, REVOKE them on green; resume. Then green's reverse slot goes, and every key
written on green (blue's ``bluegreen_sync.reverse_touched``) is re-snapshotted from
blue through the forward pipeline, so green's sync state for it is blue's again;
until that refresh has run, the next write cutover is refused (a gate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from bluegreen import control
from bluegreen.control import Phase
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from consumers.reverse import blue as reverse_blue
from cutover import fence
from cutover.write_switch import Leg, WriteSwitchReport, switch_leg
from producers.reverse import setup as reverse_setup
from producers.snapshot import service as snapshot
from schemas.domain import Domain

# The step that drops green's reverse slot and publication (tests pass a stand-in).
DropReverse = Callable[[Settings], Any]


def rollback_writes(
    settings: Settings,
    domain: Domain,
    *,
    budget_s: float = 1.0,
    reason: str | None = None,
    drop_reverse: DropReverse | None = None,
) -> WriteSwitchReport:
    spec = domain.reverse
    if spec is None:
        raise BluegreenError(f"domain {domain.ref} has no reverse spec: writes are on blue")
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        current, state = control.phase(conn), control.write_state(conn)
    if current != Phase.WRITES_ON_GREEN or state.route.color != "green":
        raise BluegreenError(
            f"the migration is {current.value} with writes on {state.route.color}; "
            "nothing to roll back (`bluegreen rollback` moves reads)"
        )
    leg = Leg(
        name="write rollback",
        old="green",
        new="blue",
        old_dsn=settings.green_dsn,
        old_tables=list(spec.tables),
        new_dsn=settings.blue_dsn,
        new_tables=[(domain.source.schema, domain.source.table)],
        applier=fence.reverse(settings),
        pause_phase=Phase.WRITES_ROLLING_BACK,
        done_phase=Phase.READS_ON_GREEN,
        abort_phase=Phase.WRITES_ON_GREEN,
        refresh_pending=True,
    )
    report = switch_leg(
        settings,
        leg,
        WriteSwitchReport("write rollback", owner="green"),
        budget_s=budget_s,
        reason=reason,
    )
    (drop_reverse or reverse_setup.drop_reverse)(settings)
    report.refreshed_keys = refresh_green(settings, domain)
    return report


def touched_keys(blue_dsn: SecretStr) -> list[str]:
    """Aggregate keys the reverse applier wrote into blue (none if it never ran)."""
    with db.connect(blue_dsn, autocommit=True) as conn:
        return sorted(reverse_blue.touched_keys(conn))


def forget_touched(blue_dsn: SecretStr, keys: list[str]) -> None:
    if keys:
        with db.connect(blue_dsn) as conn:
            reverse_blue.clear_touched(conn, keys)
            conn.commit()


def refresh_green(settings: Settings, domain: Domain) -> int:
    """Re-snapshot exactly the keys written on green (as verify's repair does); clear
    them and the pending mark. Returns how many aggregates were refreshed."""
    log = get_logger(component="write-rollback")
    started = time.monotonic()
    keys = touched_keys(settings.blue_dsn)
    if keys:
        natural = [k for key in keys for k in domain.verify.repair_keys(key)]
        with db.connect(settings.control_dsn) as conn:
            control.add_key_task(conn, domain.source.qualified, natural)
        result = snapshot.SnapshotService(settings, domain.source, Metrics()).run(workers=1)
        if not result.ok:
            raise BluegreenError(
                f"the re-snapshot of {len(keys)} keys written on green failed; run "
                "`bluegreen snapshot` again, then `bluegreen rollback --writes --refresh-only`"
            )
        forget_touched(settings.blue_dsn, keys)
    with db.connect(settings.control_dsn) as conn:
        control.set_refresh_pending(conn, False, action="write rollback: green refreshed")
    log.info("green refreshed", keys=len(keys), seconds=round(time.monotonic() - started, 2))
    return len(keys)
