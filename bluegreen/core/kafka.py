"""Kafka client factory: every producer, consumer and admin client is built here,
from the frozen settings, so delivery guarantees are decided in one place."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from bluegreen.core.config import KafkaSettings
from bluegreen.core.errors import BluegreenError

# A restarted broker is found again within a second, not after librdkafka's default
# reconnect backoff of up to 10 s per attempt.
_RECONNECT = {"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000}

# Java clients hash keys with murmur2; using it here keeps one key on one
# partition whichever client (ours, Kafka Connect, Debezium) produced it.
PARTITIONER = "murmur2_random"
_DEFAULT_BATCH_BYTES = 1_000_000


def producer_config(settings: KafkaSettings, **overrides: str | int) -> dict[str, str | int]:
    """Idempotent, acks=all, compressed, large batches: no loss, no reordering on retry."""
    conf: dict[str, str | int] = {
        **_RECONNECT,  # before the settings: BLUEGREEN_KAFKA__EXTRA may change it
        **settings.client_config(),
        "enable.idempotence": "true",
        "acks": "all",
        "partitioner": PARTITIONER,
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": _DEFAULT_BATCH_BYTES,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
    }
    conf.update(overrides)
    return conf


def consumer_config(
    settings: KafkaSettings, group_id: str, **overrides: str | int
) -> dict[str, str | int]:
    """Manual commits only; memory bounded by small per-partition prefetch."""
    conf: dict[str, str | int] = {
        **_RECONNECT,  # before the settings: BLUEGREEN_KAFKA__EXTRA may change it
        **settings.client_config(),
        "group.id": group_id,
        # A consumer killed with kill -9 holds its partitions until its session expires:
        # 10 s, not librdkafka's 45 s, bounds how long they wait for another member
        # (heartbeats run in librdkafka's own thread, so a long batch does not count).
        "session.timeout.ms": 10_000,
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "queued.max.messages.kbytes": 32_768,
        "fetch.max.bytes": 16_777_216,
    }
    conf.update(overrides)
    return conf


ErrorCallback = Callable[[KafkaError], None]


def make_producer(
    settings: KafkaSettings, *, error_cb: ErrorCallback | None = None, **overrides: str | int
) -> Producer:
    """A producer; `error_cb` receives client-level errors (all brokers down, fatal)."""
    conf: dict[str, str | int | ErrorCallback] = {**producer_config(settings, **overrides)}
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return Producer(conf)


def topic_message_limit(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> int | None:
    """The topic's max.message.bytes (None when the topic or its config is not readable)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = make_admin(settings)  # must outlive the future, or the request is cancelled
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout_s)
    except KafkaException:
        return None
    entry = configs.get("max.message.bytes")
    return int(entry.value) if entry is not None and entry.value else None


def producer_for_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    error_cb: ErrorCallback | None = None,
    **overrides: str | int,
) -> Producer:
    """A producer whose batches fit the topic's max.message.bytes.

    A batch bigger than the topic accepts is refused whole by the broker, failing every
    message in it; sized to the limit, only a message that alone exceeds it fails (at
    once, in the client), and the others are delivered.
    """
    limit = topic_message_limit(settings, topic)
    if limit is not None and limit < _DEFAULT_BATCH_BYTES:
        overrides = {"message.max.bytes": limit, "batch.size": limit, **overrides}
    return make_producer(settings, error_cb=error_cb, **overrides)


def make_consumer(settings: KafkaSettings, group_id: str, **overrides: str | int) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def topic_ends(settings: KafkaSettings, group_id: str, timeout_s: float = 10.0) -> dict[int, int]:
    """The high watermark of each partition of the change topic."""
    consumer = make_consumer(settings, group_id)
    try:
        ends = {}
        for p in range(settings.partitions):
            _low, ends[p] = consumer.get_watermark_offsets(
                TopicPartition(settings.topic, p), timeout=timeout_s
            )
        return ends
    finally:
        consumer.close()


def make_admin(settings: KafkaSettings) -> AdminClient:
    conf: dict[str, str | int | float | bool] = {**settings.client_config()}
    return AdminClient(conf)


def wait_for_broker(settings: KafkaSettings, timeout_s: float) -> int:
    """Block until the cluster answers a metadata request; return its broker count."""
    admin = make_admin(settings)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if metadata.brokers:
                return len(metadata.brokers)
        except KafkaException as exc:
            last = exc
        time.sleep(0.2)
    raise BluegreenError(
        f"Kafka at {settings.bootstrap_servers} did not answer a metadata request "
        f"within {timeout_s:.0f}s"
    ) from last


def ensure_topic(
    settings: KafkaSettings,
    name: str,
    partitions: int,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> bool:
    """Create the topic if missing; return True when this call created it.

    An existing topic with a different partition count is an error, not a
    silent mismatch: per-key order depends on the partition count.
    """
    admin = make_admin(settings)
    existing = admin.list_topics(timeout=timeout_s).topics.get(name)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != partitions:
            raise BluegreenError(
                f"topic {name} exists with {len(existing.partitions)} partitions, "
                f"configuration says {partitions}; keys would move between partitions. "
                "Use a new topic name or set kafka.partitions to the existing count."
            )
        return False
    topic = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=settings.replication_factor,
        config=dict(config or {}),
    )
    future = admin.create_topics([topic], operation_timeout=timeout_s)[name]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise BluegreenError(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, name, partitions, timeout_s)
    return True


def _wait_for_leaders(admin: AdminClient, name: str, partitions: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topic = admin.list_topics(topic=name, timeout=timeout_s).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise BluegreenError(f"topic {name} has no leader for every partition after {timeout_s:.0f}s")


def delete_topics(settings: KafkaSettings, names: list[str], timeout_s: float = 30.0) -> None:
    admin = make_admin(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [n for n in names if n in existing]
    if not wanted:
        return
    for name, future in admin.delete_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise BluegreenError(f"could not delete topic {name}: {exc}") from exc
