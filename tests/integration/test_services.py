"""The real broker and the real PostgreSQL clusters, end to end."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import TopicPartition

from bluegreen import db
from bluegreen.config import Settings
from bluegreen.kafka import ensure_topic, make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_topic_produce_and_consume_round_trip(settings: Settings, test_id: str) -> None:
    kafka = settings.kafka
    assert ensure_topic(kafka, kafka.topic, partitions=3) is True
    assert ensure_topic(kafka, kafka.topic, partitions=3) is False  # idempotent

    producer = make_producer(kafka)
    acked: list[tuple[bytes, int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        acked.append((msg.key(), msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    sent = {f"sku-{i}".encode(): f"value-{i}".encode() for i in range(300)}
    for key, value in sent.items():
        producer.produce(kafka.topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(acked) == 300
    # One key, one partition: the partitioner is deterministic.
    by_key = {key: partition for key, partition, _ in acked}
    assert len(set(by_key.values())) == 3

    consumer = make_consumer(kafka, group_id=f"g.{test_id}")
    consumer.subscribe([kafka.topic])
    received: dict[bytes, bytes] = {}
    try:
        while len(received) < len(sent):
            for msg in consumer.consume(num_messages=500, timeout=5.0):
                assert msg.error() is None
                assert msg.partition() == by_key[msg.key()]
                received[msg.key()] = msg.value()
        assert received == sent
        # Manual commits only: nothing is committed until we say so.
        committed = consumer.committed([TopicPartition(kafka.topic, p) for p in range(3)])
        assert all(tp.offset < 0 for tp in committed)
    finally:
        consumer.close()


def test_existing_topic_with_other_partition_count_is_refused(settings: Settings) -> None:
    kafka = settings.kafka
    ensure_topic(kafka, kafka.topic, partitions=2)
    with pytest.raises(Exception, match="partitions"):
        ensure_topic(kafka, kafka.topic, partitions=6)


@pytest.mark.parametrize("color", ["blue", "green", "control"])
def test_write_and_read_rows(settings: Settings, color: str) -> None:
    dsn = getattr(settings, f"{color}_dsn")
    with db.connect(dsn) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text NOT NULL)")
        with conn.cursor().copy("COPY t (id, name) FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"name-{i}"))
        conn.commit()
    with db.connect(dsn) as conn:
        count, total = conn.execute("SELECT count(*), sum(id) FROM t").fetchone()  # type: ignore[misc]
        assert (count, total) == (1000, sum(range(1000)))


def test_blue_is_ready_for_logical_decoding(settings: Settings) -> None:
    with db.connect(settings.blue_dsn) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        slots = conn.execute("SHOW max_replication_slots").fetchone()
        assert slots is not None and int(slots[0]) >= 10
    with psycopg.connect(settings.green_dsn.get_secret_value()) as conn:
        assert conn.execute("SHOW wal_level").fetchone() != ("logical",)
