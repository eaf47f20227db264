"""Finish what a write switch left when its process died with writes paused.

Routers hold writes for the pause budget and then refuse them (the switch promised
to resume in time), so a dead switch stops the application's writes until this
runs. The record says how far the switch got:
- not flipped (writes-switching, writes-rolling-back): abort — writes resume on the
  color that owned them, the phase goes back; blue's lock died with the switch's
  session (a reverse slot a dead write cutover created stays: the next one reuses
  or recreates it, as ``prepare_green`` decides);
- flipped (the phase already writes-on-green or back to reads-on-green): make the
  privileges match the owner (GRANT on it, REVOKE on the other) and resume; after a
  dead write rollback the refresh stays pending (``rollback --writes
  --refresh-only``) and green's reverse slot is still there.
"""

from __future__ import annotations

from bluegreen import control
from bluegreen.control import Phase
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from cutover import app_roles
from schemas.domain import Domain

_ABORT_TO = {
    Phase.WRITES_SWITCHING: Phase.READS_ON_GREEN,
    Phase.WRITES_ROLLING_BACK: Phase.WRITES_ON_GREEN,
}


def recover(settings: Settings, domain: Domain, *, reason: str | None = None) -> control.WriteState:
    if domain.reverse is None:
        raise BluegreenError(f"domain {domain.ref} has no reverse spec: writes never moved")
    with db.connect(settings.control_dsn) as conn:
        current, state = control.phase(conn), control.write_state(conn)
    if not state.route.paused:
        raise BluegreenError(
            f"writes are not paused (owned by {state.route.color}): nothing to recover"
        )
    tables = {
        "blue": [(domain.source.schema, domain.source.table)],
        "green": list(domain.reverse.tables),
    }
    owner = state.route.color
    action = "write switch recovered: aborted" if current in _ABORT_TO else "write switch recovered"
    if current not in _ABORT_TO:
        for color, dsn in (("blue", settings.blue_dsn), ("green", settings.green_dsn)):
            with db.connect(dsn) as conn:
                app_roles.grant_app(conn, tables[color], write=color == owner)
    with db.connect(settings.control_dsn) as conn:
        return control.change_writes(
            conn,
            action=action,
            paused=False,
            to_phase=_ABORT_TO.get(current),
            reason=reason,
            details={"phase_found": current.value},
        )
