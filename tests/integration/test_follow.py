"""Continuous verification (cutover.follow) and the gate that reads its watermark."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from consumers import touched
from cutover import follow_state, status, switch
from cutover.follow import Follower
from schemas.catalog import CATALOG
from schemas.lsn import parse_lsn
from tests.integration.test_cutover import gate, pipeline  # noqa: F401 - the fixture
from tests.support.consume import wait_drained
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def follower(settings: Settings, **options: int | float) -> Follower:
    return Follower(settings, CATALOG, Metrics().verification, fence_timeout_s=30, **options)


@contextmanager
def following(settings: Settings, **options: int | float) -> Iterator[Follower]:
    """A verifier running in a thread, as `bluegreen verify --follow` runs it."""
    running = follower(settings, **options)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: state(settings) is not None, timeout_s=60, what="the first full pass")
        yield running
    finally:
        running.stop.set()
        thread.join(30)
        running.close()


def state(settings: Settings) -> follow_state.FollowState | None:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        return follow_state.read(conn)


def test_a_change_after_the_full_pass_is_reverified_by_the_next_cycle(
    pipeline: Settings,  # noqa: F811
) -> None:
    with follower(pipeline, sweep_keys=0) as once:
        first = once.full_pass()
    assert first.full_pass and first.differing == 0 and first.rechecked > 1_000
    with db.connect(pipeline.blue_dsn) as conn:
        sku = conn.execute(
            "UPDATE legacy_product SET price = price + 1 WHERE id = 7 RETURNING sku"
        ).fetchone()
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert sku is not None and lsn is not None
    wait_drained(pipeline)
    # A new verifier (a restart): the state and the queue are durable, no full pass.
    with follower(pipeline, sweep_keys=0) as restarted:
        cycle = restarted.cycle()
    assert not cycle.full_pass
    assert cycle.keys == {sku[0]}  # exactly the touched aggregate, nothing else
    assert cycle.differing == 0 and cycle.pending == 0
    assert cycle.watermark_lsn > parse_lsn(lsn[0])
    with db.connect(pipeline.green_dsn, autocommit=True) as conn:
        assert touched.backlog(conn) == 0  # consumed with the watermark
    with follower(pipeline, sweep_keys=0) as again:
        idle = again.cycle()
    assert idle.keys == frozenset() and idle.watermark_lsn > cycle.watermark_lsn


def test_one_verifier_at_a_time(pipeline: Settings) -> None:  # noqa: F811
    with follower(pipeline, sweep_keys=0) as first:
        first.full_pass()
        second = follower(pipeline, sweep_keys=0)
        waiting = threading.Thread(target=second.cycle, daemon=True)
        waiting.start()
        waiting.join(2.5)
        assert waiting.is_alive()  # held at the lock while the first one lives
    waiting.join(30)  # the first one's session ended: the second takes over
    assert not waiting.is_alive()
    second.close()


def test_the_gate_passes_on_the_watermark_in_seconds(pipeline: Settings) -> None:  # noqa: F811
    without = gate(
        switch.cutover(pipeline, CATALOG, timeout_s=30, dry_run=True), "verification clean"
    )
    assert without.ok and without.figure.endswith("no `bluegreen verify --follow` is running")
    with following(pipeline, interval_s=0.2):
        started = time.monotonic()
        report = switch.cutover(pipeline, CATALOG, timeout_s=30, dry_run=True)
        seconds = time.monotonic() - started
    verified = gate(report, "verification clean")
    assert verified.ok, verified.figure
    assert "(continuous verification" in verified.figure, verified.figure
    assert report.passed and seconds < 30


def test_a_corruption_of_green_is_found_by_the_sweep_and_blocks_cutover(
    pipeline: Settings,  # noqa: F811
) -> None:
    with following(pipeline, interval_s=0.2, sweep_keys=300):
        with db.connect(pipeline.green_dsn) as conn:  # outside the pipeline: no queue row
            corrupted = conn.execute(
                "UPDATE catalog.channel_listing SET stock = stock + 1000 WHERE sku = "
                "(SELECT max(sku) FROM catalog.product) RETURNING sku"
            ).fetchone()
        assert corrupted is not None
        started = time.monotonic()
        wait_until(
            lambda: (s := state(pipeline)) is not None and corrupted[0] in s.differing,
            timeout_s=30,
            what="the verifier to find the corruption",
        )
        found_s = time.monotonic() - started
        shown = status.collect(pipeline, CATALOG).following
        assert shown is not None and shown["running"] and shown["differing"] == 1
        with pytest.raises(switch.CutoverRefusedError, match=f"SKUs differ: {corrupted[0]}"):
            switch.cutover(pipeline, CATALOG, timeout_s=30)
    assert found_s < 30
    current = state(pipeline)
    assert current is not None
    assert {(d["sku"], d["kind"]) for d in current.differences} == {(corrupted[0], "different")}
