"""The real broker and the real PostgreSQL clusters, end to end."""

from __future__ import annotations

import time

import psycopg
import pytest
from confluent_kafka import TopicPartition

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.kafka import ensure_topic, make_consumer, make_producer

pytestmark = pytest.mark.integration


def java_murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (seed 0x9747b28c), as an unsigned 32-bit value."""
    m = 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def java_partition(key: bytes, partitions: int) -> int:
    """Where Java's default partitioner puts a keyed message (librdkafka's murmur2 too)."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("key", "signed_hash"),
    [  # Kafka's own UtilsTest.testMurmur2 vectors
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_the_reference_murmur2_is_kafkas(key: bytes, signed_hash: int) -> None:
    assert java_murmur2(key) == signed_hash & 0xFFFFFFFF


def test_topic_produce_and_consume_round_trip(settings: Settings, test_id: str) -> None:
    kafka = settings.kafka
    assert ensure_topic(kafka, kafka.topic, partitions=3) is True
    assert ensure_topic(kafka, kafka.topic, partitions=3) is False  # idempotent

    producer = make_producer(kafka)
    acked: dict[tuple[bytes, bytes], tuple[int, int]] = {}

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        acked[(msg.key(), msg.value())] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    # Every key twice: one key, one partition, in order — the one Java clients pick.
    sent = [(f"sku-{i}".encode(), f"value-{i}-{n}".encode()) for n in (1, 2) for i in range(300)]
    for key, value in sent:
        producer.produce(kafka.topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(acked) == len(sent)
    expected = {key: java_partition(key, 3) for key, _ in sent}
    assert {(key, at[0]) for (key, _), at in acked.items()} == set(expected.items())
    assert set(expected.values()) == {0, 1, 2}
    for i in range(300):
        first, second = (acked[(f"sku-{i}".encode(), f"value-{i}-{n}".encode())] for n in (1, 2))
        assert first[1] < second[1]

    consumer = make_consumer(kafka, group_id=f"g.{test_id}")
    consumer.subscribe([kafka.topic])
    received: dict[tuple[bytes, bytes], tuple[int, int]] = {}
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=5.0):
                assert msg.error() is None
                assert msg.partition() == expected[msg.key()]
                received[(msg.key(), msg.value())] = (msg.partition(), msg.offset())
        assert received == acked  # every message, where the broker acknowledged it
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


def test_blue_and_green_are_ready_for_logical_decoding(settings: Settings) -> None:
    """Blue for the capture, green for the reverse capture (issue 14); control not."""
    for dsn in (settings.blue_dsn, settings.green_dsn):
        with db.connect(dsn) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            slots = conn.execute("SHOW max_replication_slots").fetchone()
            assert slots is not None and int(slots[0]) >= 10
    with psycopg.connect(settings.control_dsn.get_secret_value()) as conn:
        assert conn.execute("SHOW wal_level").fetchone() != ("logical",)
