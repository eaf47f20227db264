"""The real apply SQL under concurrent appliers: green stays exact whatever they race.

Each hypothesis example builds a history of blue changes (moves between SKUs as two
operations, one per SKU, as the producers send them), lays it out as Kafka would:
per partition of the SKU, snapshot rows interleaved with the stream. Two appliers —
each its own green connection, positions and cursors, as two consumers of one group
(or a consumer and its zombie) — take batches over random partitions, often at the
same moment on the same partitions, and rewind to green's positions whenever their
batch is fenced (consumers/positions.py). Whatever the interleaving hypothesis picks,
green must end equal to transform(final blue), every position at the end of its log.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bluegreen.core import db
from bluegreen.core.config import Settings
from consumers import positions
from consumers.apply import GreenWriter, create_green
from consumers.batch import Batch
from consumers.positions import PositionMovedError
from schemas.catalog import CATALOG
from schemas.catalog.staged import stage_row
from schemas.catalog.transform import GreenState, Listing, Product, transform, transform_state
from schemas.envelope import Op, Version
from tests.support.events import blue_row, event
from tests.support.histories import history

pytestmark = pytest.mark.integration

PARTITIONS = 3
TOPIC = "concurrency"


def partition_of(ev: dict[str, Any]) -> int:
    image = ev["after"] if ev["after"] is not None else ev["before"]
    return zlib.crc32(image["sku"].encode()) % PARTITIONS


class Applier:
    """A consumer reduced to its green side: claim, batch from a cursor, apply, rewind."""

    def __init__(self, settings: Settings, logs: dict[int, list[dict[str, Any]]]) -> None:
        self.writer = GreenWriter(settings.green_dsn, TOPIC, CATALOG)
        self.reader = positions.PositionReader(settings.green_dsn, TOPIC)
        self.logs = logs
        self.owned: dict[int, int] = {}
        self.fenced = 0

    def claim(self) -> None:
        self.owned = {p: pos.next_offset for p, pos in self.reader.claim(self.logs).items()}

    def step(self, partitions: list[int], size: int) -> None:
        if not self.owned:
            self.claim()
        batch = Batch()
        for partition in partitions:
            start = self.owned[partition]
            taken = self.logs[partition][start : start + size]
            if not taken:
                continue
            for offset, ev in enumerate(taken, start):
                batch.advance(partition, offset)
                batch.rows.extend(stage_row(op, partition) for op in transform(ev))
            batch.expected[partition] = start
        if batch.empty:
            return
        try:
            self.writer.apply(batch)
        except PositionMovedError:
            self.fenced += 1
            self.claim()  # as the consumer does: rewind to green's positions
            return
        for partition, progress in batch.progress.items():
            self.owned[partition] = progress.next_offset

    def drain(self) -> None:
        self.claim()
        while any(self.owned[p] < len(log) for p, log in self.logs.items()):
            self.step(list(self.logs), 50)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


def step_at_once(
    barrier: threading.Barrier,
    failures: list[BaseException],
    applier: Applier,
    partitions: list[int],
    size: int,
) -> None:
    try:
        barrier.wait(5)
        applier.step(partitions, size)
    except BaseException as exc:  # kept for the test thread
        failures.append(exc)


def green_state(settings: Settings) -> GreenState:
    with db.connect(settings.green_dsn) as conn:
        products = {
            row[0]: Product(*row)
            for row in conn.execute(
                "SELECT sku, product_type, name, description, attributes, primary_channel,"
                " created_at, updated_at FROM catalog.product"
            )
        }
        listings = {
            (row[0], row[1]): Listing(*row)
            for row in conn.execute(
                "SELECT sku, channel, price, currency, stock, published, created_at, updated_at"
                " FROM catalog.channel_listing"
            )
        }
    return GreenState(products, listings)


@pytest.fixture
def green(settings: Settings) -> Iterator[Settings]:
    create_green(settings.green_dsn, CATALOG)
    yield settings


def reset(settings: Settings) -> None:
    with db.connect(settings.green_dsn) as conn:
        conn.execute(
            "TRUNCATE catalog.channel_listing, catalog.product, sync.listing_record,"
            " sync.apply_position"
        )
        conn.commit()


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_two_appliers_racing_over_partitions_leave_green_exact(
    green: Settings, data: st.DataObject
) -> None:
    reset(green)
    transactions, final, snapshot_at, snapshot_rows = history(data.draw)
    point = 1000 * snapshot_at + 500
    snapshot = [event(Op.READ, after=r, version=Version(point, 0)) for r in snapshot_rows.values()]
    stream = [ev for events in transactions[snapshot_at:] for ev in events]
    # Kafka's picture: per partition, the stream in commit order, with the snapshot's rows
    # (produced concurrently by the snapshot workers) at random places among them.
    logs: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
    for ev in stream:
        logs[partition_of(ev)].append(ev)
    for ev in snapshot:
        log = logs[partition_of(ev)]
        log.insert(data.draw(st.integers(0, len(log)), label="snapshot position"), ev)
    appliers = [Applier(green, logs), Applier(green, logs)]
    try:
        steps = data.draw(
            st.lists(
                st.tuples(
                    st.lists(st.integers(0, PARTITIONS - 1), min_size=1, max_size=3, unique=True),
                    st.integers(1, 6),
                    st.lists(st.integers(0, PARTITIONS - 1), min_size=1, max_size=3, unique=True),
                    st.integers(1, 6),
                    st.booleans(),  # both appliers at the same moment, or one after the other
                ),
                max_size=12,
            ),
            label="schedule",
        )
        for first, first_size, second, second_size, together in steps:
            if together:
                barrier = threading.Barrier(2)
                failures: list[BaseException] = []
                threads = [
                    threading.Thread(
                        target=step_at_once,
                        args=(barrier, failures, appliers[0], first, first_size),
                    ),
                    threading.Thread(
                        target=step_at_once,
                        args=(barrier, failures, appliers[1], second, second_size),
                    ),
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
                assert not failures, failures
            else:
                appliers[0].step(first, first_size)
                appliers[1].step(second, second_size)
        appliers[1].drain()
    finally:
        for applier in appliers:
            applier.close()
    assert green_state(green) == transform_state(final.values(), Version(0, 0))
    with db.connect(green.green_dsn) as conn:
        stored = dict(
            conn.execute(
                "SELECT partition, next_offset FROM sync.apply_position WHERE topic = %s",
                (TOPIC,),
            ).fetchall()
        )
    assert stored == {p: len(log) for p, log in logs.items()}


def test_a_batch_whose_partition_someone_else_applied_is_fenced(green: Settings) -> None:
    """A zombie (or a consumer after green lost its commits) applies nothing and learns
    where green stands."""
    row_events = [
        event(Op.CREATE, after=r, version=Version(1000, i + 1))
        for i, r in enumerate(history_rows())
    ]
    logs = {0: row_events, 1: [], 2: []}
    owner, zombie = Applier(green, logs), Applier(green, logs)
    try:
        owner.claim()
        zombie.claim()
        owner.step([0], 2)
        zombie.step([0], 3)  # believes partition 0 is at 0: green says 2
        assert zombie.fenced == 1
        assert zombie.owned[0] == 2
        with db.connect(green.green_dsn) as conn:
            count = conn.execute("SELECT count(*) FROM sync.listing_record").fetchone()
        assert count == (2,)
    finally:
        owner.close()
        zombie.close()


def test_a_delete_racing_an_older_upsert_of_the_same_key_leaves_no_stale_listing(
    green: Settings,
) -> None:
    """Defect 1 of issue 12, made deterministic: an applier whose statement would start
    while another applier's transaction on the same key is open.

    X exists as a tombstone. Applier B applies an upsert of X (v1) and is held inside
    its transaction by a test lock on X's record; applier A then applies the delete of X
    (v2) from the same position. With one data-modifying CTE under READ COMMITTED and
    no serialization, A's listing delete ran on a snapshot taken before B committed the
    listing, and the listing outlived its tombstone. With the position lock, A waits for
    B, finds the position moved, rewinds and applies the delete after it.
    """
    x = blue_row(id=1, sku="BG-0000042", channel="US", currency="USD")
    # The SKU keeps a live GB listing: its product stays (deleting the product would
    # cascade to its listings and hide a stale one).
    gb = blue_row(
        id=2,
        sku=x["sku"],
        channel="GB",
        currency="GBP",
        product_type="Sneaker GB",
        attributes='{"colour": "Black", "size_uk": 8.5}',
    )
    logs = {
        0: [
            event(Op.CREATE, after=gb, version=Version(400, 1)),
            event(Op.DELETE, before=x, version=Version(500, 1)),
            event(Op.CREATE, after=x, version=Version(1000, 1)),
            event(Op.DELETE, before=x, version=Version(2000, 1)),
        ]
    }
    first, b, a = Applier(green, logs), Applier(green, logs), Applier(green, logs)
    holder = db.connect(green.green_dsn)
    try:
        first.step([0], 2)  # GB listed; X (US) a tombstone at v0
        b.claim()
        a.claim()
        holder.execute("SELECT 1 FROM sync.listing_record WHERE sku = %s FOR UPDATE", (x["sku"],))
        b_thread = threading.Thread(target=b.step, args=([0], 1))
        b_thread.start()
        wait_for_waiting_backends(green, 1)
        a_thread = threading.Thread(target=a.step, args=([0], 2))
        a_thread.start()
        wait_for_waiting_backends(green, 2)
        holder.rollback()
        b_thread.join(30)
        a_thread.join(30)
        assert a.fenced == 1
        a.drain()
    finally:
        holder.close()
        for applier in (first, b, a):
            applier.close()
    assert green_state(green) == transform_state([gb], Version(0, 0))
    with db.connect(green.green_dsn) as conn:
        record = conn.execute(
            "SELECT channel, deleted, src_lsn, src_seq FROM sync.listing_record WHERE sku = %s"
            " ORDER BY channel",
            (x["sku"],),
        ).fetchall()
    assert record == [("GB", False, 400, 1), ("US", True, 2000, 1)]


def wait_for_waiting_backends(settings: Settings, count: int, timeout_s: float = 30) -> None:
    """Until `count` backends of the test's green database wait on a lock."""
    deadline = time.monotonic() + timeout_s
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} backends waiting"
            time.sleep(0.01)


def history_rows() -> list[dict[str, Any]]:
    return [blue_row(id=i, sku=f"BG-{i:07d}", channel="US", currency="USD") for i in range(1, 4)]
