"""The apply service against real Kafka and PostgreSQL: exact convergence, always."""

from __future__ import annotations

import signal
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from bluegreen.core import db
from bluegreen.core.config import ConsumerSettings, Settings, SnapshotSettings
from bluegreen.core.kafka import ensure_topic, make_producer
from bluegreen.core.metrics import Metrics
from consumers import dlq
from consumers.apply import create_green
from consumers.dlq import DlqLimitExceededError
from consumers.service import ConsumerService
from cutover.verify import verify
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed
from schemas.codec import default_codec
from schemas.envelope import Op, Version
from tests.support.blue_writer import BlueWriter
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.cli import bluegreen, spawn
from tests.support.consume import committed_offsets, running_consumer, wait_drained
from tests.support.events import blue_row, event
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def prepared(settings: Settings, rows: int, **consumer: Any) -> Settings:
    load_seed(settings.blue_dsn, rows, 42, replace=False)
    options = {"batch_max_messages": 500, "retry_backoff_base_s": 0.2, **consumer}
    return settings.model_copy(
        update={
            "consumer": ConsumerSettings(**options),
            "snapshot": SnapshotSettings(
                chunk_size=400, heartbeat_interval_s=0.3, heartbeat_timeout_s=2
            ),
        }
    )


def assert_exact(settings: Settings) -> None:
    report = verify(settings, CATALOG)
    assert report.clean, report.differences[:10]
    assert report.products > 0


def green_dump(settings: Settings) -> list[Any]:
    with db.connect(settings.green_dsn) as conn:
        return [
            conn.execute("SELECT * FROM catalog.product ORDER BY sku").fetchall(),
            conn.execute("SELECT * FROM catalog.channel_listing ORDER BY sku, channel").fetchall(),
            conn.execute("SELECT * FROM sync.listing_record ORDER BY sku, channel").fetchall(),
        ]


def produce(settings: Settings, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    ensure_topic(settings.kafka, settings.kafka.topic, settings.kafka.partitions)
    producer = make_producer(settings.kafka)
    for key, value in messages:
        producer.produce(settings.kafka.topic, value, key)
    assert producer.flush(30) == 0


def encoded(op: Op, version: Version, **row: Any) -> tuple[bytes, bytes]:
    image = blue_row(**row)
    ev = event(
        op,
        before=image if op == Op.DELETE else None,
        after=None if op == Op.DELETE else image,
        version=version,
    )
    return image["sku"].encode(), default_codec().encode(ev)


def test_snapshot_with_concurrent_changes_converges_exactly(settings: Settings) -> None:
    settings = prepared(settings, 4_000)
    writer = BlueWriter(settings)
    with running_cdc(settings), running_consumer(settings):
        writer.start()
        wait_until(lambda: writer.transactions > 10, "blue writes before the snapshot")
        report = snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=2)
        assert report.ok
        done = writer.transactions
        wait_until(lambda: writer.transactions > done + 50, "blue writes after the snapshot")
        writer.stop.set()
        writer.join(10)
        assert writer.error is None and writer.transactions > 50
        wait_confirmed(settings)
        wait_drained(settings)
    assert_exact(settings)


def test_the_same_batch_delivered_twice_changes_nothing(settings: Settings) -> None:
    settings = prepared(settings, 1_500)
    snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
    with running_consumer(settings):
        wait_drained(settings)
    before = green_dump(settings)
    # Forget every position, in green and in Kafka: everything is delivered again.
    with db.connect(settings.green_dsn) as conn:
        conn.execute("DELETE FROM sync.apply_position")
    again = settings.model_copy(
        update={"consumer": settings.consumer.model_copy(update={"group_id": "second-delivery"})}
    )
    with running_consumer(again) as service:
        wait_drained(again)
    assert service.applied == 1_500
    assert green_dump(settings) == before


def test_a_late_older_snapshot_row_does_not_bring_a_delete_back(settings: Settings) -> None:
    settings = prepared(settings, 10)
    produce(
        settings,
        [
            encoded(Op.CREATE, Version(150, 1), sku="LATE-1"),
            encoded(Op.DELETE, Version(200, 1), sku="LATE-1"),
            encoded(Op.READ, Version(100, 0), sku="LATE-1"),  # read before the delete
        ],
    )
    with running_consumer(settings):
        wait_drained(settings)
    with db.connect(settings.green_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM catalog.product WHERE sku = 'LATE-1'"
        ).fetchone() == (0,)
        record = conn.execute(
            "SELECT deleted, src_lsn, src_seq FROM sync.listing_record WHERE sku = 'LATE-1'"
        ).fetchone()
    assert record == (True, 200, 1)  # the versioned tombstone held


def test_two_consumers_and_a_rebalance_mid_stream_converge_exactly(settings: Settings) -> None:
    settings = prepared(settings, 3_000)
    writer = BlueWriter(settings, seed=7)
    with running_cdc(settings):
        writer.start()
        first = spawn(settings, "consume", "--metrics-port", "-1")
        try:
            snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
            second = spawn(settings, "consume", "--metrics-port", "-1")  # rebalance
            try:
                wait_until(lambda: "partitions assigned" in second.output(), "rebalance", 60)
                first.signal(signal.SIGTERM)  # another rebalance, mid-stream
                assert first.wait(60) == 0, first.output()
                done = writer.transactions
                wait_until(lambda: writer.transactions > done + 50, "writes after it", 60)
                writer.stop.set()
                writer.join(10)
                assert writer.error is None
                wait_confirmed(settings)
                wait_drained(settings)
                assert "partitions assigned" in second.output()
            finally:
                second.close()
        finally:
            first.close()
    assert_exact(settings)


def test_poison_messages_go_to_the_dlq_with_their_headers(settings: Settings) -> None:
    settings = prepared(settings, 10)
    good = [encoded(Op.CREATE, Version(100 + i, 1), id=i, sku=f"OK-{i}") for i in range(1, 51)]
    poison = [
        (b"GARBAGE-1", b"not avro at all"),
        encoded(Op.CREATE, Version(300, 1), sku="BAD-CURRENCY", currency="EUR"),
        encoded(Op.CREATE, Version(301, 1), sku="X" * 40),  # longer than green's sku
    ]
    produce(settings, good[:20] + poison + good[20:])
    with running_consumer(settings):
        wait_drained(settings)
    with db.connect(settings.green_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.product").fetchone() == (50,)
    letters = read_all(settings.kafka, settings.kafka.dlq_topic)
    assert len(letters) == 3
    by_step = {r.headers["bluegreen.step"].decode(): r for r in letters}
    assert set(by_step) == {"decode", "transform", "validate"}
    decode_letter = by_step["decode"]
    assert decode_letter.value == b"not avro at all" and decode_letter.key == b"GARBAGE-1"
    assert decode_letter.headers["bluegreen.topic"].decode() == settings.kafka.topic
    assert int(decode_letter.headers["bluegreen.offset"]) >= 0
    assert b"SerializationError" in decode_letter.headers["bluegreen.error"]
    assert b"currency 'EUR'" in by_step["transform"].headers["bluegreen.reason"]
    assert b"sku" in by_step["validate"].headers["bluegreen.reason"]
    listed = bluegreen(settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"open": 3' in listed.stdout


def test_a_replayed_message_is_applied_with_the_version_guard(settings: Settings) -> None:
    settings = prepared(settings, 10)
    create_green_with_a_price_cap(settings)
    produce(
        settings,
        [
            encoded(Op.CREATE, Version(100, 1), sku="CAPPED", price=Decimal("5000.00")),
            encoded(Op.CREATE, Version(100, 2), sku="OLDER", price=Decimal("7000.00")),
            encoded(Op.UPDATE, Version(200, 1), sku="OLDER", price=Decimal("10.00")),
        ],
    )
    with running_consumer(settings):
        wait_drained(settings)
        assert dlq.open_count(settings.kafka, settings.consumer.group_id) == 2
        with db.connect(settings.green_dsn) as conn:  # the operator fixes the cause
            conn.execute("ALTER TABLE catalog.channel_listing DROP CONSTRAINT price_cap")
        report = dlq.replay_open(
            settings.kafka, settings.consumer.group_id, settings.green_dsn, CATALOG
        )
        # OLDER's letter (100, 2) is superseded: green holds its key at (200, 1).
        assert report == dlq.ReplayReport(replayed=1, superseded=1)
        assert dlq.open_count(settings.kafka, settings.consumer.group_id) == 0
        wait_until(lambda: price_of(settings, "CAPPED") is not None, "the replayed row", 30)
        wait_drained(settings)
    assert price_of(settings, "CAPPED") == Decimal("5000.00")
    assert price_of(settings, "OLDER") == Decimal("10.00")  # the newer change kept its place


def create_green_with_a_price_cap(settings: Settings) -> None:
    create_green(settings.green_dsn, CATALOG)
    with db.connect(settings.green_dsn) as conn:
        conn.execute(
            "ALTER TABLE catalog.channel_listing ADD CONSTRAINT price_cap CHECK (price < 1000)"
        )


def price_of(settings: Settings, sku: str) -> Decimal | None:
    with db.connect(settings.green_dsn) as conn:
        row = conn.execute(
            "SELECT price FROM catalog.channel_listing WHERE sku = %s", (sku,)
        ).fetchone()
    return row[0] if row else None


def test_the_dlq_limit_stops_the_service_and_commits_nothing_bad(settings: Settings) -> None:
    settings = prepared(settings, 10, dlq_max_consecutive=50, batch_max_messages=1000)
    produce(settings, [(f"k{i}".encode(), b"garbage") for i in range(300)])
    service = ConsumerService(settings, CATALOG, Metrics())
    with pytest.raises(DlqLimitExceededError, match="50 messages in a row failed"):
        service.run()
    assert read_all(settings.kafka, settings.kafka.dlq_topic) == []  # nothing dead-lettered
    # Nothing committed past the bad messages.
    assert all(offset < 0 for offset in committed_offsets(settings).values())


def test_green_down_for_seconds_then_back_loses_nothing(settings: Settings) -> None:
    settings = prepared(settings, 2_000)
    writer = BlueWriter(settings, seed=3)
    database = settings.green_dsn.get_secret_value().rsplit("/", 1)[1]
    admin = settings.green_dsn.get_secret_value().rsplit("/", 1)[0] + "/postgres"
    with running_cdc(settings), running_consumer(settings) as service:
        writer.start()
        snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
        with psycopg.connect(admin, autocommit=True) as conn:  # green goes away
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
            # The consumer finds out at its next batch or position check.
            wait_until(lambda: service.metrics.consumer_paused._value.get() == 1, "the pause", 30)
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        writer.stop.set()
        writer.join(10)
        wait_confirmed(settings)
        wait_drained(settings)
        assert service.metrics.consumer_apply_retries._value.get() >= 1
        assert service.metrics.consumer_paused._value.get() == 0
    assert_exact(settings)


def test_kill_minus_nine_mid_batch_then_restart_converges_exactly(settings: Settings) -> None:
    settings = prepared(settings, 12_000, batch_max_messages=2_000)
    snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=2)
    proc = spawn(settings, "consume", "--metrics-port", "-1")
    try:
        deadline = time.monotonic() + 60
        while not any_position(settings):
            assert proc.poll() is None, proc.output()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # mid-stream: some batches applied, more in flight
        proc.signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.close()
    again = spawn(settings, "consume", "--metrics-port", "-1")
    try:
        wait_drained(settings)
        again.signal(signal.SIGTERM)
        assert again.wait(60) == 0, again.output()
    finally:
        again.close()
    assert_exact(settings)


def any_position(settings: Settings) -> bool:
    with db.connect(settings.green_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('sync.apply_position')").fetchone()
        if exists is None or exists[0] is None:
            return False
        row = conn.execute("SELECT count(*) FROM sync.apply_position").fetchone()
    return bool(row and row[0])
