"""Without moving data: a write switch that died with writes paused (routers hold,
then refuse, and `bluegreen cutover --writes --recover` finishes or aborts it from
the record), and a router that does not confirm a pause (the switch aborts, naming
it)."""

from __future__ import annotations

import psycopg
import pytest

from bluegreen import control
from bluegreen.control import Phase
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from cutover import app_roles, write_switch
from cutover.write_gate import WritePauseTimeoutError
from schemas.catalog import CATALOG
from schemas.catalog.seed_load import load_seed
from tests.support.app_writers import app_router, grant_app_roles, write_new_sku
from tests.support.cli import bluegreen

pytestmark = pytest.mark.integration


@pytest.fixture
def reads_on_green(settings: Settings) -> Settings:
    """Blue's and green's tables and the application's grants; the phase at reads-on-green
    (no pipeline: nothing here moves data)."""
    load_seed(settings.blue_dsn, 50, 42, replace=False)
    CATALOG.create_green(settings.green_dsn)
    grant_app_roles(settings, CATALOG)
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        for phase in (Phase.SNAPSHOTTING, Phase.CATCHING_UP, Phase.IN_SYNC):
            control.transition(conn, phase, action="test")
        control.switch_reads(
            conn, "green", to_phase=Phase.READS_ON_GREEN, action="test", reason=None
        )
    return settings


def writable(settings: Settings, color: str) -> bool:
    dsn = settings.blue_dsn if color == "blue" else settings.green_dsn
    try:
        with psycopg.connect(app_roles.as_role(dsn).get_secret_value()) as conn:
            write_new_sku(color, conn, f"PROBE-{color}")
            conn.rollback()
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def recover(settings: Settings) -> control.WriteState:
    done = bluegreen(settings, "cutover", "--writes", "--recover", "--reason", "switch died")
    assert done.returncode == 0, done.stdout + done.stderr
    with db.connect(settings.control_dsn) as conn:
        return control.write_state(conn)


def test_a_dead_switch_before_the_flip_is_aborted_to_blue(reads_on_green: Settings) -> None:
    settings = reads_on_green
    with db.connect(settings.control_dsn) as conn:  # what a switch leaves when killed
        control.change_writes(
            conn,
            action="write cutover: writes paused",
            paused=True,
            budget_ms=200,
            to_phase=Phase.WRITES_SWITCHING,
            expect_color="blue",
        )
    with (
        db.connect(settings.control_dsn) as conn,
        pytest.raises(BluegreenError, match="writes are already paused"),
    ):  # a second switch cannot pause again
        control.change_writes(
            conn,
            action="write cutover: writes paused",
            paused=True,
            to_phase=Phase.WRITES_SWITCHING,
            expect_color="blue",
        )
    router = app_router(settings)
    try:
        with pytest.raises(WritePauseTimeoutError), router.connection("write"):
            pass  # held for the budget and the grace, then refused: never attempted
        state = recover(settings)
        assert state.route.color == "blue" and not state.route.paused
        with router.connection("write") as (color, conn):
            write_new_sku(color, conn, "AFTER-RECOVER")
        assert color == "blue"
    finally:
        router.close()
    with db.connect(settings.control_dsn) as conn:
        assert control.phase(conn) == Phase.READS_ON_GREEN
    assert writable(settings, "blue") and not writable(settings, "green")


def test_a_dead_switch_after_the_flip_is_finished_on_green(reads_on_green: Settings) -> None:
    settings = reads_on_green
    with db.connect(settings.control_dsn) as conn:
        control.change_writes(
            conn,
            action="write cutover: writes paused",
            paused=True,
            budget_ms=200,
            to_phase=Phase.WRITES_SWITCHING,
            expect_color="blue",
        )
        control.change_writes(
            conn, action="write cutover", color="green", to_phase=Phase.WRITES_ON_GREEN
        )
    state = recover(settings)
    assert state.route.color == "green" and not state.route.paused
    with db.connect(settings.control_dsn) as conn:
        assert control.phase(conn) == Phase.WRITES_ON_GREEN
    assert writable(settings, "green") and not writable(settings, "blue")


def test_a_router_that_does_not_confirm_the_pause_aborts_the_switch(
    reads_on_green: Settings,
) -> None:
    settings = reads_on_green
    with db.connect(settings.control_dsn, autocommit=True) as conn:  # alive, never answers
        control.report_client(conn, "stuck-host:4242:cafe", 0, True)
    router = app_router(settings)  # a live one, which does answer
    try:
        with pytest.raises(write_switch.WriteSwitchAbortedError) as aborted:
            write_switch.switch_to_green(
                settings,
                CATALOG,
                write_switch.WriteSwitchReport("write cutover", owner="blue"),
                budget_s=0.3,
                prepare_green=lambda _settings, _spec: None,
            )
        assert aborted.value.report.aborted_at == "routers"
        assert aborted.value.report.blockers == ["router stuck-host:4242:cafe at write epoch 0"]
        with router.connection("write") as (color, conn):  # resumed on blue
            write_new_sku(color, conn, "AFTER-ABORT")
        assert color == "blue"
    finally:
        router.close()
    with db.connect(settings.control_dsn) as conn:
        assert control.phase(conn) == Phase.READS_ON_GREEN
        assert control.lagging_clients(conn, 0, 60) == []  # the closed router unregistered
