"""The engine without the catalog: a two-column domain through snapshot, Kafka, the
consumer, CDC, dead letters and verification, on the real services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from bluegreen.core import db
from bluegreen.core.config import ConsumerSettings, Settings, SnapshotSettings
from bluegreen.core.metrics import Metrics
from consumers import dlq
from cutover import fence
from cutover.verify import verify
from producers.snapshot import service as snapshot
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.cli import bluegreen
from tests.support.consume import running_consumer, wait_drained
from tests.support.tiny import BLUE_DDL, TINY
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROWS = 40


def green_items(settings: Settings) -> dict[int, str]:
    with db.connect(settings.green_dsn) as conn:
        rows = conn.execute("SELECT id, label FROM tiny.item").fetchall()
    return {int(i): str(label) for i, label in rows}


@pytest.fixture
def tiny_pipeline(settings: Settings) -> Iterator[Settings]:
    """Blue's public.tiny seeded and snapshotted, CDC and the consumer running with the
    tiny domain, green caught up."""
    settings = settings.model_copy(
        update={
            "domain": TINY.ref,
            "consumer": ConsumerSettings(batch_max_messages=100, retry_backoff_base_s=0.2),
            "snapshot": SnapshotSettings(chunk_size=10, heartbeat_interval_s=0.3),
            "cdc": settings.cdc.model_copy(update={"heartbeat_interval_s": 1.0}),
        }
    )
    with db.connect(settings.blue_dsn) as conn:
        conn.execute(BLUE_DDL)
        conn.execute(
            "INSERT INTO public.tiny SELECT i, 'item ' || i FROM generate_series(1, %s) i",
            (ROWS,),
        )
        conn.commit()
    with ExitStack() as stack:
        # The snapshot's workers are processes of their own: the spec travels to them.
        report = snapshot.SnapshotService(settings, TINY.source, Metrics()).run(workers=2)
        assert report.ok and report.rows == ROWS
        stack.enter_context(running_cdc(settings, TINY.source))
        stack.enter_context(running_consumer(settings, TINY))
        wait_drained(settings)
        yield settings


def test_the_engine_migrates_and_verifies_a_domain_it_does_not_know(
    tiny_pipeline: Settings,
) -> None:
    settings = tiny_pipeline
    assert green_items(settings) == {i: f"ITEM {i}" for i in range(1, ROWS + 1)}
    report = verify(settings, TINY, wait_for=fence.waiter(settings, 30))
    assert report.clean, report.differences
    assert (report.skus, report.products, report.listings) == (ROWS, ROWS, 0)

    with db.connect(settings.blue_dsn) as conn:  # CDC: an update, a delete, an insert
        conn.execute("UPDATE public.tiny SET name = 'lamp' WHERE id = 1")
        conn.execute("DELETE FROM public.tiny WHERE id = 2")
        conn.execute("INSERT INTO public.tiny VALUES (100, 'chair')")
        conn.commit()
    wait_confirmed(settings)
    wait_drained(settings)
    items = green_items(settings)
    assert (items[1], 2 in items, items[100]) == ("LAMP", False, "CHAIR")

    with db.connect(settings.green_dsn) as conn:  # green drifts: verification names it
        conn.execute("UPDATE tiny.item SET label = 'WRONG' WHERE id = 3")
        conn.execute("DELETE FROM tiny.item WHERE id = 4")
        conn.commit()
    report = verify(settings, TINY, wait_for=fence.waiter(settings, 30))
    found = {(d.sku, d.kind, d.table, d.fields) for d in report.differences}
    assert found == {(3, "different", "item", ("label",)), (4, "missing", "item", ())}
    assert report.keys(TINY) == [(3,), (4,)]

    # The CLI picks the domain from the settings (BLUEGREEN_DOMAIN) and repairs through
    # the pipeline: a re-snapshot of exactly those keys.
    repaired = bluegreen(settings, "verify", "--repair", "--timeout", "60")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "verification clean" in repaired.stdout


def test_a_row_the_domain_cannot_map_is_a_dead_letter(tiny_pipeline: Settings) -> None:
    settings = tiny_pipeline
    with db.connect(settings.blue_dsn) as conn:
        conn.execute("INSERT INTO public.tiny VALUES (200, '   ')")
        conn.commit()
    wait_confirmed(settings)
    wait_drained(settings)

    def letters() -> dlq.DlqCounts:
        return dlq.counts(settings.kafka, settings.consumer.group_id, settings.green_dsn, TINY)

    wait_until(lambda: letters().open == 1, "one open dead letter", timeout_s=30)
    assert letters().superseded == 0  # the tiny domain declares no supersession
    report = verify(settings, TINY, wait_for=fence.waiter(settings, 30))
    assert [(d.sku, d.kind, d.table) for d in report.differences] == [(200, "unmappable", "tiny")]
