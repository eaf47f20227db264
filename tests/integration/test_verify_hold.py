"""Verification of aggregates that never stop changing: the held round (cutover.verify_hold)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from cutover import fence
from cutover.verify import classify
from cutover.verify_hold import held_round, verify_holding
from schemas.catalog import CATALOG
from schemas.catalog.transform import CHANNEL_CURRENCY
from tests.integration.test_cutover import pipeline  # noqa: F401 - the fixture
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class Hammer(threading.Thread):
    """Updates one SKU's blue rows back to back, as a hot key in production is."""

    def __init__(self, settings: Settings, sku: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.sku = settings, sku
        self.stop = threading.Event()
        self.updates = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with db.connect(self.settings.blue_dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    conn.execute(
                        "UPDATE legacy_product SET price = price + 0.01, updated_at = now() "
                        "WHERE sku = %s",
                        (self.sku,),
                    )
                    self.updates += 1
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                self.stop.wait(0.002)


@contextmanager
def hammering(settings: Settings, sku: str) -> Iterator[Hammer]:
    hammer = Hammer(settings, sku)
    hammer.start()
    try:
        yield hammer
    finally:
        hammer.stop.set()
        hammer.join(10)


def hot_sku(settings: Settings) -> str:
    """A SKU listed on one channel only (so green can be given a listing blue lacks)."""
    with db.connect(settings.blue_dsn) as conn:
        row = conn.execute(
            "SELECT sku FROM legacy_product GROUP BY sku HAVING count(*) = 1 ORDER BY sku LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_held_round_judges_a_key_that_changes_all_the_time(pipeline: Settings) -> None:  # noqa: F811
    sku = hot_sku(pipeline)
    with hammering(pipeline, sku) as hammer:
        before = wait_until(lambda: hammer.updates, "the writer's first update", 10)
        report, differing = held_round(pipeline, CATALOG, [sku], fence.waiter(pipeline, 30))
        classify(report, differing, CATALOG)
        # The writer goes on after the round (its update held by the round lands then).
        wait_until(lambda: hammer.updates > before, "the writer's updates after the round", 10)
    # Its rows could not change while held: the key is judged, and it is equal.
    assert report.unsettled == [] and report.differences == []
    assert report.skus == 1
    assert hammer.errors == []  # held writers wait; they do not fail


def test_the_gate_s_verification_passes_under_a_hot_key_and_finds_its_corruption(
    pipeline: Settings,  # noqa: F811
) -> None:
    sku = hot_sku(pipeline)
    with hammering(pipeline, sku) as hammer:
        clean = verify_holding(pipeline, CATALOG, fence.waiter(pipeline, 30))
        assert clean.clean, clean.as_dict()
        assert clean.listings == 3_000
        with db.connect(pipeline.green_dsn) as conn:  # a listing blue never had
            listed = conn.execute(
                "SELECT channel FROM catalog.channel_listing WHERE sku = %s", (sku,)
            ).fetchone()
            assert listed is not None
            channel = next(c for c in CHANNEL_CURRENCY if c != listed[0])
            conn.execute(
                "INSERT INTO catalog.channel_listing (sku, channel, price, currency, stock, "
                "published, created_at, updated_at, src_lsn, src_seq) "
                "VALUES (%s, %s, 1, %s, 1, true, now(), now(), 1, 1)",
                (sku, channel, CHANNEL_CURRENCY[channel]),
            )
        found = verify_holding(pipeline, CATALOG, fence.waiter(pipeline, 30))
    assert [(d.sku, d.kind, d.channel) for d in found.differences] == [(sku, "extra", channel)]
    assert found.unsettled == []
    assert hammer.errors == [] and hammer.updates > 0
