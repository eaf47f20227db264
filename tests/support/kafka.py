"""Read a topic to its end, as tests need to check what the producers wrote."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from bluegreen.core.config import KafkaSettings
from bluegreen.core.kafka import make_admin, make_consumer


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: dict[str, bytes]


def read_all(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every message from the beginning to the high watermark of each partition."""
    metadata = make_admin(kafka).list_topics(topic=topic, timeout=10).topics[topic]
    consumer = make_consumer(kafka, f"test-reader-{uuid.uuid4().hex[:8]}")
    try:
        ends = {}
        for partition in metadata.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        records: list[Record] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end: {ends}")
            for msg in consumer.consume(num_messages=5000, timeout=1.0):
                if msg.error():
                    raise RuntimeError(msg.error())
                headers = {k: v for k, v in (msg.headers() or [])}
                records.append(
                    Record(msg.key(), msg.value(), msg.partition(), msg.offset(), headers)
                )
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return records
    finally:
        consumer.close()
