"""The reverse applier against real Kafka and PostgreSQL: green's writes reach blue
exactly, through the inverse transform, fenced, under the reverse origin, through a
kill -9.

Green starts as transform(blue) (snapshot + forward consumer); the test then writes
green as a green-version client would, and produces the GreenChange events the
reverse capture would send (``schemas.reverse.encode``).
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from consumers import positions
from consumers.batch import PartitionProgress
from consumers.positions import PositionMovedError
from consumers.reverse.blue import (
    BlueWriter,
    ReverseBatch,
    create_tables,
    fence_applied,
    read_positions,
    touched_keys,
)
from cutover.verify import verify
from cutover.verify_reverse import verify_reverse
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed
from schemas.control import REVERSE_ORIGIN, Fence
from tests.support.cli import bluegreen, spawn
from tests.support.consume import running_consumer, wait_drained
from tests.support.reverse import (
    blue_positions,
    blue_rows,
    changes,
    produce,
    reverse_settings,
    running_reverse,
    wait_reverse_drained,
    write_green,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def rev(settings: Settings) -> Iterator[Settings]:
    """Blue seeded, green = transform(blue), a reverse topic of the test's own."""
    load_seed(settings.blue_dsn, 300, 42, replace=False)
    snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
    with running_consumer(settings):
        wait_drained(settings)
    with reverse_settings(settings) as own:
        yield own


def skus(settings: Settings, query: str) -> list[str]:
    with db.connect(settings.green_dsn) as conn:
        return [row[0] for row in conn.execute(query).fetchall()]  # type: ignore[arg-type]


ALL_THREE = "SELECT sku FROM catalog.channel_listing GROUP BY sku HAVING count(*) = 3 ORDER BY sku"
NO_GB = (
    "SELECT sku FROM catalog.product p WHERE NOT EXISTS (SELECT 1 FROM catalog.channel_listing l"
    " WHERE l.sku = p.sku AND l.channel = 'GB') ORDER BY sku"
)


def assert_both_ways_exact(settings: Settings) -> None:
    backward = verify_reverse(settings, CATALOG, fence_timeout_s=None)
    assert backward.clean, backward.differences[:10]
    assert backward.products > 0
    forward = verify(settings, CATALOG)  # and transform(blue) == green: the round trip
    assert forward.clean, forward.differences[:10]


def test_green_writes_are_applied_to_blue_exactly(rev: Settings) -> None:
    a, c, d, quiet = skus(rev, ALL_THREE)[:4]
    b = skus(rev, NO_GB)[0]
    lsn = write_green(
        rev,
        [
            (
                "UPDATE catalog.product SET name = 'Renamed', product_type = 'Boot',"
                " attributes = attributes || '{\"weight_g\": 1234}' WHERE sku = %s",
                (a,),
            ),
            (
                "INSERT INTO catalog.channel_listing (sku, channel, price, currency, stock,"
                " published, created_at, updated_at, src_lsn, src_seq)"
                " SELECT sku, 'GB', 12.34, 'GBP', 5, true, created_at, created_at, 0, 0"
                " FROM catalog.product WHERE sku = %s",
                (b,),
            ),
            (
                "UPDATE catalog.channel_listing SET price = 77.70, stock = 7"
                " WHERE sku = %s AND channel = 'EU'",
                (c,),
            ),
            ("DELETE FROM catalog.product WHERE sku = %s", (d,)),
        ],
    )
    quiet_before = blue_rows(rev, quiet)
    produce(rev, changes([a, b, c, d, quiet], lsn))
    produce(rev, changes([a, quiet], lsn))  # a replay writes nothing new
    with running_reverse(rev) as service:
        wait_reverse_drained(rev)
    assert service.applied >= 5
    renamed = blue_rows(rev, a)
    assert renamed["US"]["name"] == "Renamed"
    assert {ch: row["product_type"] for ch, row in renamed.items()} == {
        "US": "Boot US",
        "GB": "Boot GB",
        "EU": "Boot EU",
    }
    assert renamed["US"]["attributes"]["weight_lb"] == pytest.approx(1234 / 453.59237, abs=0.005)
    assert renamed["GB"]["attributes"]["weight_g"] == 1234
    assert renamed["GB"]["name"] != "Renamed"  # the other channels keep their own copy
    assert blue_rows(rev, b)["GB"]["price"] == Decimal("12.34")
    assert (blue_rows(rev, c)["EU"]["price"], blue_rows(rev, c)["EU"]["stock"]) == (
        Decimal("77.70"),
        7,
    )
    assert blue_rows(rev, d) == {}
    assert blue_rows(rev, quiet) == quiet_before  # same xmin-free content: untouched
    with db.connect(rev.blue_dsn) as conn:
        assert set(touched_keys(conn)) == {a, b, c, d, quiet}
    assert_both_ways_exact(rev)
    result = bluegreen(rev, "verify", "--direction", "reverse", "--no-fence")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_zombie_batch_with_a_stale_offset_applies_nothing(rev: Settings) -> None:
    _claimed(rev)
    first, zombie_key = skus(rev, ALL_THREE)[:2]
    writer = BlueWriter(rev.blue_dsn, rev.green_dsn, rev.kafka.reverse_topic, _spec(), 4)
    try:
        lsn = write_green(
            rev, [("UPDATE catalog.product SET name = 'One' WHERE sku = %s", (first,))]
        )
        writer.apply(_batch({first: lsn}, expected=0, next_offset=5))
        before = blue_rows(rev, zombie_key)
        lsn = write_green(
            rev, [("UPDATE catalog.product SET name = 'Zombie' WHERE sku = %s", (zombie_key,))]
        )
        with pytest.raises(PositionMovedError):
            writer.apply(_batch({zombie_key: lsn}, expected=0, next_offset=3))  # stale: 0, not 5
    finally:
        writer.close()
    assert blue_rows(rev, zombie_key) == before
    assert blue_rows(rev, first)["US"]["name"] == "One"
    assert blue_positions(rev) == {0: 5}
    with db.connect(rev.blue_dsn) as conn:
        assert set(touched_keys(conn)) == {first}


def test_green_state_is_read_only_once_the_batch_s_transactions_are_visible(
    rev: Settings,
) -> None:
    """A commit is decoded once its WAL is flushed, a moment before other sessions see
    it: the applier must not read green's state before then (it would miss the change
    and move past it). An open transaction stands in for that moment."""
    _claimed(rev)
    sku = skus(rev, ALL_THREE)[0]
    writer = BlueWriter(rev.blue_dsn, rev.green_dsn, rev.kafka.reverse_topic, _spec(), 4)
    green = db.connect(rev.green_dsn)
    try:
        green.execute("UPDATE catalog.product SET name = 'Not yet seen' WHERE sku = %s", (sku,))
        xid = int(green.execute("SELECT txid_current() % 4294967296").fetchone()[0])  # type: ignore[index]
        batch = _batch({sku: 1}, expected=0, next_offset=1)
        batch.xids.add(xid)
        applying = threading.Thread(target=writer.apply, args=(batch,), daemon=True)
        applying.start()
        applying.join(0.5)
        assert applying.is_alive()  # waiting for the transaction to become visible
        green.commit()
        applying.join(10)
        assert not applying.is_alive()
    finally:
        green.close()
        writer.close()
    assert blue_rows(rev, sku)["US"]["name"] == "Not yet seen"
    assert blue_positions(rev) == {0: 1}


def test_blue_transactions_carry_the_reverse_origin(rev: Settings) -> None:
    _claimed(rev)
    sku = skus(rev, ALL_THREE)[0]
    with db.connect(rev.blue_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (_slot(rev),)
        )
    writer = BlueWriter(rev.blue_dsn, rev.green_dsn, rev.kafka.reverse_topic, _spec(), 4)
    other = BlueWriter(rev.blue_dsn, rev.green_dsn, rev.kafka.reverse_topic, _spec(), 4)
    try:
        lsn = write_green(
            rev, [("UPDATE catalog.product SET name = 'Origin' WHERE sku = %s", (sku,))]
        )
        writer.apply(_batch({sku: lsn}, expected=0, next_offset=1))
        other.apply(_batch({}, expected=1, next_offset=2))
        assert (writer.origin, other.origin) == (f"{REVERSE_ORIGIN}_1", f"{REVERSE_ORIGIN}_2")
        with db.connect(rev.blue_dsn, autocommit=True) as conn:
            status = conn.execute(
                "SELECT s.remote_lsn::text FROM pg_replication_origin_status s"
                " WHERE s.external_id = %s",
                (writer.origin,),
            ).fetchone()
            every = _decoded(conn, rev, only_local=False)
            local = _decoded(conn, rev, only_local=True)
    finally:
        writer.close()
        other.close()
    assert status is not None and status[0] != "0/0"
    assert any("legacy_product" in line for line in every)  # the applier wrote blue...
    assert not any("legacy_product" in line for line in local)  # ...all of it under the origin


def test_kill_9_of_the_applier_mid_load_loses_nothing(rev: Settings) -> None:
    pool = skus(rev, ALL_THREE)[:40]
    stop = threading.Event()
    written = {"transactions": 0}

    def green_client() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            picked = rng.sample(pool, 3)
            lsn = write_green(
                rev,
                [
                    (
                        "UPDATE catalog.channel_listing SET price = %s, stock = %s"
                        " WHERE sku = %s AND channel = 'GB'",
                        (Decimal(rng.randint(100, 99999)) / 100, rng.randint(0, 50), picked[0]),
                    ),
                    (
                        "UPDATE catalog.product SET name = %s WHERE sku = %s",
                        (f"Name {rng.randint(0, 10**6)}", picked[1]),
                    ),
                    (
                        "UPDATE catalog.product SET attributes = attributes || %s::jsonb"
                        " WHERE sku = %s",
                        (f'{{"weight_g": {rng.randint(100, 3000)}}}', picked[2]),
                    ),
                ],
            )
            produce(rev, changes(picked, lsn))
            written["transactions"] += 1

    client = threading.Thread(target=green_client, daemon=True)
    first = spawn(rev, "reverse-apply", "--metrics-port", "-1")
    second = None
    try:
        client.start()
        wait_until(lambda: sum(blue_positions(rev).values()) > 30, "blue applied some", 90)
        first.signal(signal.SIGKILL)
        first.wait(10)
        second = spawn(rev, "reverse-apply", "--metrics-port", "-1")
        wait_until(lambda: written["transactions"] > 120, "green writes after the kill", 120)
        stop.set()
        client.join(30)
        wait_reverse_drained(rev, timeout_s=180)
        assert second.poll() is None, second.output()[-3000:]
    finally:
        stop.set()
        first.close()
        if second is not None:
            second.signal(signal.SIGTERM)
            second.wait(30)
            second.close()
    assert_both_ways_exact(rev)


def test_verify_reverse_names_the_keys_blue_lacks(rev: Settings) -> None:
    """Without the applier, a green write is a reverse difference, by key."""
    sku = skus(rev, ALL_THREE)[0]
    write_green(rev, [("UPDATE catalog.product SET name = 'Unapplied' WHERE sku = %s", (sku,))])
    report = verify_reverse(rev, CATALOG, fence_timeout_s=None)
    assert [(d.sku, d.kind, d.channel, d.fields) for d in report.differences] == [
        (sku, "different", "US", ("name",))
    ]
    result = bluegreen(rev, "verify", "--direction", "reverse", "--no-fence")
    assert result.returncode == 1 and sku in result.stdout


def test_a_fence_is_recorded_with_the_partition_position(rev: Settings) -> None:
    """What the switch's fence waiter reads in blue (consumers.reverse.blue)."""
    _claimed(rev)
    writer = BlueWriter(rev.blue_dsn, rev.green_dsn, rev.kafka.reverse_topic, _spec(), 4)
    try:
        batch = _batch({}, expected=0, next_offset=1)
        batch.progress[0].fence = Fence("fence-1", 4242)
        writer.apply(batch)
    finally:
        writer.close()
    with db.connect(rev.blue_dsn) as conn:
        assert fence_applied(conn, rev.kafka.reverse_topic, 4242) == {0}
        assert fence_applied(conn, rev.kafka.reverse_topic, 4243) == set()
        assert read_positions(conn, rev.kafka.reverse_topic)[0]["fence_id"] == "fence-1"


# -- helpers ------------------------------------------------------------------------------------


def _claimed(settings: Settings) -> None:
    """Blue's tables and a position row for partition 0 (the service claims at assignment)."""
    create_tables(settings.blue_dsn)
    with db.connect(settings.blue_dsn) as conn:
        positions.claim(conn, settings.kafka.reverse_topic, [0], positions.REVERSE)


def _spec():  # type: ignore[no-untyped-def]
    assert CATALOG.reverse is not None
    return CATALOG.reverse


def _batch(keys: dict[str, int], *, expected: int, next_offset: int) -> ReverseBatch:
    lsn = max(keys.values(), default=0)
    progress = PartitionProgress(next_offset, src_lsn=lsn, src_ts_ms=1_700_000_000_000)
    return ReverseBatch(keys=dict(keys), progress={0: progress}, expected={0: expected})


def _slot(settings: Settings) -> str:
    return f"{settings.cdc.slot}_t"[:63]


def _decoded(conn: psycopg.Connection, settings: Settings, *, only_local: bool) -> list[str]:
    options = ("only-local", "1") if only_local else ("include-xids", "0")
    rows = conn.execute(
        "SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, %s, %s)",
        (_slot(settings), *options),
    ).fetchall()
    return [str(row[0]) for row in rows]
