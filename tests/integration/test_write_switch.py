"""The write switch against the real services: writes move to green and back through
the traffic router, held (never failed) during the pause, nothing acknowledged lost.

Until the capture and apply lanes of issue 14 are merged, green's reverse slot is a
recorded no-op and, for the rollback, a stand-in advances blue's reverse positions
past green's fence (it applies nothing); so the tests assert what exists: writes
acknowledged on blue are on blue and, through the forward path, on green; writes
acknowledged on green are on green.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest

from bluegreen import control
from bluegreen.control import Phase
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from cutover import app_roles, gates, switch, write_rollback, write_switch
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.domain import ReverseSpec
from tests.integration.test_cutover import configured
from tests.support.app_writers import (
    RouterWriters,
    app_router,
    grant_app_roles,
    percentile,
    skus_in,
    write_new_sku,
    writing,
)
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.cli import bluegreen
from tests.support.consume import running_consumer, wait_drained

pytestmark = pytest.mark.integration

BUDGET_S = 1.0


@pytest.fixture
def reads_on_green(settings: Settings) -> Iterator[Settings]:
    """Blue seeded and snapshotted, CDC and the consumer running, reads on green, the
    application's role granted (writes on blue, reads only on green)."""
    settings = configured(settings)
    with ExitStack() as stack:
        stack.enter_context(running_cdc(settings))
        stack.enter_context(running_consumer(settings))
        assert snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=2).ok
        wait_confirmed(settings)
        wait_drained(settings)
        grant_app_roles(settings, CATALOG)
        assert switch.cutover(settings, CATALOG, timeout_s=60).switched
        yield settings


class PrepareGreen:
    """Records the call the capture lane's producers.reverse.setup.prepare_green gets."""

    def __init__(self) -> None:
        self.calls: list[ReverseSpec] = []

    def __call__(self, settings: Settings, spec: ReverseSpec) -> None:
        self.calls.append(spec)


def state(settings: Settings) -> tuple[Phase, control.WriteState, list[str]]:
    with db.connect(settings.control_dsn) as conn:
        trail = [e.action for e in control.audit_trail(conn, limit=50)]
        return control.phase(conn), control.write_state(conn), trail


def app_write(settings: Settings, color: str, sql_text: str, *args: Any) -> None:
    dsn = settings.blue_dsn if color == "blue" else settings.green_dsn
    with psycopg.connect(app_roles.as_role(dsn).get_secret_value()) as conn:
        conn.execute(sql_text, args)  # type: ignore[arg-type]


def assert_nothing_lost(settings: Settings, writers: RouterWriters) -> None:
    on_blue, on_green = writers.by_color("blue"), writers.by_color("green")
    wait_confirmed(settings)
    wait_drained(settings)
    assert skus_in(settings, "blue", on_blue) == on_blue
    assert skus_in(settings, "green", on_blue) == on_blue  # through the forward path
    assert skus_in(settings, "green", on_green) == on_green


def hold_figures(writers: RouterWriters) -> dict[str, float]:
    holds = writers.router.hold_stats.holds
    return {
        "held_writes": len(holds),
        "p99_ms": percentile(holds, 0.99) * 1000,
        "max_ms": max(holds, default=0.0) * 1000,
    }


def test_writes_move_to_green_held_not_failed_and_nothing_lost(reads_on_green: Settings) -> None:
    settings = reads_on_green
    prepare = PrepareGreen()
    stale = psycopg.connect(app_roles.as_role(settings.blue_dsn).get_secret_value())
    with writing(settings, "WSW") as writers:
        threading.Event().wait(1.0)
        report = write_switch.cutover_writes(
            settings, CATALOG, budget_s=BUDGET_S, timeout_s=60, prepare_green=prepare
        )
        threading.Event().wait(1.0)
    figures = hold_figures(writers)
    print("write cutover", report.as_dict(), figures)
    assert writers.failures == []
    assert writers.by_color("blue") and writers.by_color("green")
    assert report.switched and report.owner == "green" and report.pause_ms < BUDGET_S * 1000
    assert figures["max_ms"] <= BUDGET_S * 1000
    assert prepare.calls == [CATALOG.reverse]
    phase, write_state, trail = state(settings)
    assert phase == Phase.WRITES_ON_GREEN and write_state.route.color == "green"
    assert not write_state.route.paused
    steps = ("write cutover: writes paused", "write cutover", "write cutover: writes resumed")
    assert all(step in trail for step in steps), trail
    assert_nothing_lost(settings, writers)
    # A stale blue-version client is refused by blue, in a session opened before the
    # switch and in a new one; green-version clients write green.
    with stale, pytest.raises(psycopg.errors.InsufficientPrivilege):
        stale.execute("UPDATE legacy_product SET stock = stock + 1 WHERE id = 1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_write(settings, "blue", "DELETE FROM legacy_product WHERE id = %s", 2)
    app_write(
        settings,
        "green",
        "UPDATE catalog.channel_listing SET stock = stock + 1 "
        "WHERE sku = (SELECT min(sku) FROM catalog.product)",
    )
    # Reads cannot go back to blue while green owns writes.
    with pytest.raises(control.IllegalTransitionError):
        switch.rollback(settings)
    # status: where reads and writes go; the reverse direction is n/a until it exists
    shown = bluegreen(settings, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["phase"], data["reads_on"], data["writes_on"]) == (
        "writes-on-green",
        "green",
        "green",
    )
    assert data["writes_paused"] is False and data["total_lag"] is not None
    assert data["reverse_slot"] is None and data["total_reverse_lag"] is None
    text = bluegreen(settings, "status").stdout
    assert "writes owned by" in text and "reverse lag (messages)" in text and "n/a" in text


def test_a_router_write_in_flight_when_the_pause_starts_finishes_on_blue(
    reads_on_green: Settings,
) -> None:
    """It has its connection but no statement ran yet (no transaction id for
    pg_stat_activity to see): the switch waits for its router's confirmation."""
    settings = reads_on_green
    checked = write_switch.preflight(settings, CATALOG, timeout_s=60)
    router = app_router(settings)
    entered, done = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow_write() -> None:
        with router.connection("write") as (color, conn):
            entered.set()
            time.sleep(0.3)
            write_new_sku(color, conn, "INFLIGHT-1")
        seen.append(color)
        done.set()

    writer = threading.Thread(target=slow_write, daemon=True)
    writer.start()
    try:
        assert entered.wait(5)
        report = write_switch.switch_to_green(
            settings, CATALOG, checked, budget_s=BUDGET_S, prepare_green=PrepareGreen()
        )
        assert done.wait(5) and seen == ["blue"]
    finally:
        writer.join(5)
        router.close()
    print("write cutover", report.steps_ms)
    assert report.switched and report.steps_ms["routers"] >= 100
    wait_confirmed(settings)
    wait_drained(settings)
    assert skus_in(settings, "blue", {"INFLIGHT-1"}) == {"INFLIGHT-1"}
    assert skus_in(settings, "green", {"INFLIGHT-1"}) == {"INFLIGHT-1"}


def test_an_open_blue_transaction_aborts_the_switch_named_and_loses_nothing(
    reads_on_green: Settings,
) -> None:
    settings = reads_on_green
    checked = write_switch.preflight(settings, CATALOG, timeout_s=60)  # gates pass first
    blocker = psycopg.connect(
        app_roles.as_role(settings.blue_dsn).get_secret_value(), application_name="slow-batch"
    )
    blocker.execute(
        "INSERT INTO legacy_product (sku, channel, product_type, name, description, attributes, "
        "price, currency, stock, published) VALUES ('SLOW-1', 'GB', 'Sneaker GB', 'Slow', "
        "'open', '{\"colour\": \"Red\"}', 5.00, 'GBP', 1, true)"
    )
    pid = blocker.info.backend_pid
    with writing(settings, "WTO") as writers:
        threading.Event().wait(0.5)
        with pytest.raises(write_switch.WriteSwitchAbortedError) as aborted:
            write_switch.switch_to_green(
                settings, CATALOG, checked, budget_s=0.5, prepare_green=PrepareGreen()
            )
        threading.Event().wait(0.5)
    message = str(aborted.value)
    print(message, hold_figures(writers))
    assert f"pid {pid} slow-batch" in message and "writes resumed on blue" in message
    assert aborted.value.report.aborted_at == "in-flight writes"
    assert writers.failures == [] and not writers.by_color("green")
    phase, write_state, trail = state(settings)
    assert phase == Phase.READS_ON_GREEN and write_state.route.color == "blue"
    assert not write_state.route.paused and "write cutover aborted" in trail
    blocker.commit()  # the slow transaction was never cut off: its write lands too
    blocker.close()
    writers.acked["SLOW-1"] = "blue"
    assert_nothing_lost(settings, writers)


@contextmanager
def reverse_positions_stand_in(settings: Settings, partitions: int) -> Iterator[None]:
    """Until the apply lane merges: blue's reverse positions follow green's WAL end, as a
    caught-up reverse applier's would (it applies nothing)."""
    stop = threading.Event()
    with db.connect(settings.blue_dsn) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bluegreen_sync")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bluegreen_sync.reverse_position (topic text, "
            "partition integer, next_offset bigint, src_lsn bigint, src_ts_ms bigint, "
            "fence_id text, fence_lsn bigint, updated_at timestamptz DEFAULT now(), "
            "PRIMARY KEY (topic, partition))"
        )
        conn.commit()

    def follow() -> None:
        with (
            db.connect(settings.green_dsn, autocommit=True) as green,
            db.connect(settings.blue_dsn, autocommit=True) as blue,
        ):
            while not stop.wait(0.02):
                row = green.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
                assert row is not None
                for p in range(partitions):
                    blue.execute(
                        "INSERT INTO bluegreen_sync.reverse_position VALUES "
                        "(%s, %s, 0, 0, 0, 'stand-in', %s) ON CONFLICT (topic, partition) "
                        "DO UPDATE SET fence_lsn = excluded.fence_lsn",
                        (settings.kafka.reverse_topic, p, int(row[0])),
                    )

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_rollback_writes_flips_back_and_blue_accepts_writes_again(
    reads_on_green: Settings,
) -> None:
    settings = reads_on_green
    dropped: list[Settings] = []
    with writing(settings, "WRB") as writers:
        write_switch.cutover_writes(
            settings, CATALOG, budget_s=BUDGET_S, timeout_s=60, prepare_green=PrepareGreen()
        )
        threading.Event().wait(0.8)
        with db.connect(settings.blue_dsn) as conn:  # a key "written on green", to refresh
            conn.execute("CREATE SCHEMA IF NOT EXISTS bluegreen_sync")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bluegreen_sync.reverse_touched "
                "(key text PRIMARY KEY, lsn bigint)"
            )
            sku = conn.execute("SELECT min(sku) FROM legacy_product").fetchone()[0]  # type: ignore[index]
            conn.execute("INSERT INTO bluegreen_sync.reverse_touched VALUES (%s, 0)", (sku,))
            conn.commit()
        with reverse_positions_stand_in(settings, settings.kafka.partitions):
            report = write_rollback.rollback_writes(
                settings, CATALOG, budget_s=BUDGET_S, drop_reverse=dropped.append
            )
        threading.Event().wait(0.8)
    figures = hold_figures(writers)
    print("write rollback", report.as_dict(), figures)
    assert writers.failures == []
    assert report.switched and report.owner == "blue" and report.refreshed_keys == 1
    assert len(dropped) == 1
    phase, write_state, trail = state(settings)
    assert phase == Phase.READS_ON_GREEN and write_state.route.color == "blue"
    assert not write_state.refresh_pending
    assert "write rollback" in trail and "write rollback: green refreshed" in trail
    assert write_rollback.touched_keys(settings.blue_dsn) == []
    # blue accepts the application's writes again, green refuses them
    app_write(settings, "blue", "UPDATE legacy_product SET stock = stock + 1 WHERE id = 1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_write(settings, "green", "DELETE FROM catalog.channel_listing WHERE sku = %s", sku)
    # writes acknowledged on blue after the rollback too, and the router followed
    assert len(writers.router.write_switches) >= 3
    assert_nothing_lost(settings, writers)
    # the refresh no longer blocks the next write cutover (its verification gate would
    # still see the SKUs written on green: the stand-in carried nothing back to blue)
    assert gates.refresh_done(settings).ok


def test_the_cli_dry_run_switches_nothing_and_the_cli_switches_writes(
    reads_on_green: Settings,
) -> None:
    settings = reads_on_green
    dry = bluegreen(settings, "cutover", "--writes", "--dry-run", "--json", "--timeout", "60")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    checked = json.loads(dry.stdout)
    assert [g["name"] for g in checked["gates"]][-1] == "green refreshed after write rollback"
    assert all(g["ok"] for g in checked["gates"]) and not checked["switched"]
    assert state(settings)[1].route.color == "blue"
    done = bluegreen(settings, "cutover", "--writes", "--write-pause-budget", "1s")
    assert done.returncode == 0, done.stdout + done.stderr
    phase, write_state, trail = state(settings)
    assert write_state.route.color == "green" and not write_state.route.paused
    assert phase == Phase.WRITES_ON_GREEN and "write cutover" in trail
