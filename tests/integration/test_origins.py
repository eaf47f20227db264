"""No loops: each capture leaves out the transactions the other direction's applier wrote.

Blue's capture skips transactions carrying a `bluegreen_reverse*` origin (the reverse
applier's writes into blue); green's reverse capture skips the forward applier's
(`bluegreen_forward*`, taken by every GreenWriter connection).
"""

from __future__ import annotations

import psycopg
import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.origins import take_origin
from consumers import positions
from consumers.apply import GreenWriter, create_green
from consumers.batch import Batch
from producers.reverse.setup import prepare_green
from schemas.catalog import CATALOG
from schemas.catalog.staged import stage_row
from schemas.catalog.transform import transform
from schemas.control import FORWARD_ORIGIN, REVERSE_ORIGIN
from schemas.envelope import Op
from tests.integration.test_cdc import row_events, seed
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.events import blue_row, event
from tests.support.reverse_capture import (
    SPEC,
    changes,
    reverse_thread,
    slot_active,
    wait_reverse_confirmed,
    write_product,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_blue_capture_skips_the_reverse_applier_origin_and_confirms_past_it(
    settings: Settings,
) -> None:
    seed(settings, 20)
    with running_cdc(settings) as service:
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute("UPDATE legacy_product SET name = 'captured' WHERE id = 2")
            name = REVERSE_ORIGIN + "_1"
            conn.execute(
                "SELECT pg_replication_origin_create(%(n)s) "
                "WHERE pg_replication_origin_oid(%(n)s) IS NULL",
                {"n": name},
            )
            conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
            conn.execute("UPDATE legacy_product SET name = 'looped' WHERE id = 1")
            conn.execute("SELECT pg_replication_origin_session_reset()")
        wait_confirmed(settings)  # past the skipped transaction, the last one written
        skipped = service.metrics.forward_capture().skipped_transactions._value.get()
    names = {(e["after"] or {}).get("name") for e in row_events(settings)}
    assert "captured" in names
    assert "looped" not in names
    assert skipped == 1


def forward_origins(settings: Settings) -> int:
    """How many forward origins green's cluster holds (origins are cluster-wide)."""
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE %s",
            (FORWARD_ORIGIN + "\\_%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def takes(settings: Settings, name: str) -> bool:
    """A new connection's first free forward origin is `name`."""
    with db.connect(settings.green_dsn) as conn:
        return take_origin(conn, FORWARD_ORIGIN) == name


def test_green_writers_take_distinct_forward_origins_and_release_them(settings: Settings) -> None:
    create_green(settings.green_dsn, CATALOG)
    before = forward_origins(settings)
    first = GreenWriter(settings.green_dsn, "t", CATALOG)
    second = GreenWriter(settings.green_dsn, "t", CATALOG)
    try:
        first._connection()
        second._connection()
        assert first.origin is not None and second.origin is not None
        assert first.origin.startswith(FORWARD_ORIGIN) and second.origin.startswith(FORWARD_ORIGIN)
        assert first.origin != second.origin
        taken = first.origin
        first.close()  # the origin is free again once its backend has exited
        wait_until(lambda: takes(settings, taken), "the closed writer's origin free again", 10)
    finally:
        first.close()
        second.close()
    assert forward_origins(settings) <= max(before, 2)  # a fixed set, reused: nothing leaks


def test_the_reverse_capture_skips_what_the_forward_applier_wrote(settings: Settings) -> None:
    create_green(settings.green_dsn, CATALOG)
    assert SPEC is not None
    prepare_green(settings, SPEC)
    writer = GreenWriter(settings.green_dsn, "forward", CATALOG)
    try:
        with reverse_thread(settings) as (_service, thread):
            wait_until(lambda: slot_active(settings), "the service streaming the slot", 30)
            claim(settings, "forward")
            batch = Batch()
            batch.advance(0, 0)
            applied = event(Op.CREATE, after=blue_row(sku="SKU-FROM-BLUE"))
            batch.rows.extend(stage_row(op, 0) for op in transform(applied))
            batch.expected[0] = 0
            writer.apply(batch)  # the forward applier's green transaction
            write_product(settings, "SKU-WRITTEN-ON-GREEN")  # an application's
            wait_reverse_confirmed(settings)
            thread.check()
    finally:
        writer.close()
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM catalog.product WHERE sku = 'SKU-FROM-BLUE'").fetchone()
    keys = {c.key for _, c in changes(settings) if c.table}
    assert keys == {"SKU-WRITTEN-ON-GREEN"}


def claim(settings: Settings, topic: str) -> None:
    with psycopg.connect(settings.green_dsn.get_secret_value()) as conn:
        positions.claim(conn, topic, [0])
