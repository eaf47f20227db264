"""Dead letters: messages that cannot be decoded, transformed, validated or applied.

Each goes to the dead-letter topic unchanged (same key and value) with headers
naming the step, the reason, the exception class and the original topic,
partition, offset and timestamp. Dead letters of a batch are produced and
acknowledged before the batch's offsets are committed, so none is ever lost.

The limit stops the service when too many messages fail — by share of a sliding
window or in a row — because a bad deploy must not dead-letter the catalog.

Which dead letters are still open is a Kafka fact: the replay group's committed
offsets on the dead-letter topic. `bluegreen dlq replay` re-submits the open ones
to the change topic (their key keeps them on their partition, the version guard
applies as for any change) and then commits.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from bluegreen.config import ConsumerSettings, KafkaSettings
from bluegreen.errors import BluegreenError
from bluegreen.kafka import make_admin, make_consumer, make_producer
from bluegreen.metrics import Metrics

HEADER = "bluegreen."
_REASON_LIMIT = 2000


class DlqLimitExceededError(BluegreenError):
    """Too many messages failed: the code or the configuration is wrong, not the data."""


class DlqWriteError(BluegreenError):
    """A dead letter could not be written; the batch is not committed."""


def replay_group(consumer_group: str) -> str:
    return f"{consumer_group}.dlq-replay"


class DlqLimit:
    """Sliding-window share and consecutive count of failed messages."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self._window: deque[bool] = deque(maxlen=settings.dlq_window)
        self._failed_in_window = 0
        self._consecutive = 0
        self._max_ratio = settings.dlq_max_ratio
        self._max_consecutive = settings.dlq_max_consecutive
        self._min_samples = min(settings.dlq_window, 100)

    def observe(self, failed: bool) -> None:
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._failed_in_window -= 1
        self._window.append(failed)
        self._failed_in_window += failed
        self._consecutive = self._consecutive + 1 if failed else 0
        if self._consecutive >= self._max_consecutive:
            raise DlqLimitExceededError(
                f"{self._consecutive} messages in a row failed; stopping before the whole "
                "stream goes to the dead-letter topic. Check the last errors (`bluegreen dlq "
                "list`), fix the code or configuration, restart; nothing was committed past "
                "the last good batch"
            )
        if len(self._window) >= self._min_samples:
            ratio = self._failed_in_window / len(self._window)
            if ratio > self._max_ratio:
                raise DlqLimitExceededError(
                    f"{ratio:.0%} of the last {len(self._window)} messages failed (limit "
                    f"{self._max_ratio:.0%}); stopping. Check `bluegreen dlq list`, fix the "
                    "cause and restart"
                )


@dataclass(frozen=True)
class DeadLetter:
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def original(self) -> str:
        h = self.headers
        return f"{h.get('topic')}[{h.get('partition')}]@{h.get('offset')}"


class DlqWriter:
    def __init__(self, kafka: KafkaSettings, metrics: Metrics, producer: Producer | None = None):
        self._topic = kafka.dlq_topic
        self._producer = producer or make_producer(kafka)
        self._metrics = metrics
        self._errors: list[str] = []

    def send(self, message: Message, step: str, error: BaseException) -> None:
        reason = str(error)[:_REASON_LIMIT]
        headers: list[tuple[str, str | bytes | None]] = list(_raw_headers(message))
        headers += [
            (f"{HEADER}step", step),
            (f"{HEADER}reason", reason),
            (f"{HEADER}error", f"{type(error).__module__}.{type(error).__qualname__}"),
            (f"{HEADER}topic", str(message.topic())),
            (f"{HEADER}partition", str(message.partition())),
            (f"{HEADER}offset", str(message.offset())),
            (f"{HEADER}timestamp", str(message.timestamp()[1])),
        ]
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    message.value(),
                    message.key(),
                    headers=headers,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._metrics.dlq_messages.labels(step).inc()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{err.name()}: {err.str()}")

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raise if one was refused."""
        remaining = self._producer.flush(timeout_s)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise DlqWriteError(
                f"dead letters not written to {self._topic} ({remaining} unacknowledged, errors: "
                f"{'; '.join(errors[:3]) or 'none'}); the batch stays uncommitted"
            )


def _raw_headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    headers = message.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _headers(message: Message) -> dict[str, str]:
    found = {}
    for name, value in _raw_headers(message):
        if name.startswith(HEADER) and value is not None:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            found[name[len(HEADER) :]] = text
    return found


def open_dead_letters(
    kafka: KafkaSettings, consumer_group: str, limit: int | None = None, timeout_s: float = 10.0
) -> list[DeadLetter]:
    """The dead letters not replayed yet, oldest first per partition."""
    topic = kafka.dlq_topic
    metadata = make_admin(kafka).list_topics(timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    consumer = make_consumer(kafka, replay_group(consumer_group))
    try:
        starts = _open_ranges(consumer, topic, list(metadata.partitions), timeout_s)
        letters: list[DeadLetter] = []
        for partition, (start, end) in starts.items():
            if start >= end:
                continue
            consumer.assign([TopicPartition(topic, partition, start)])
            offset = start
            deadline = time.monotonic() + timeout_s
            while offset < end and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=1.0):
                    if msg.error():
                        raise BluegreenError(f"cannot read {topic}: {msg.error()}")
                    at = int(msg.offset() or 0)
                    letters.append(DeadLetter(partition, at, msg.key(), msg.value(), _headers(msg)))
                    offset = at + 1
                    if limit is not None and len(letters) >= limit:
                        return letters
        return letters
    finally:
        consumer.close()


def _open_ranges(
    consumer: object, topic: str, partitions: list[int], timeout_s: float
) -> dict[int, tuple[int, int]]:
    committed = consumer.committed(  # type: ignore[attr-defined]
        [TopicPartition(topic, p) for p in partitions], timeout=timeout_s
    )
    ranges = {}
    for tp in committed:
        low, high = consumer.get_watermark_offsets(  # type: ignore[attr-defined]
            TopicPartition(topic, tp.partition), timeout=timeout_s
        )
        start = tp.offset if tp.offset >= 0 else low
        ranges[tp.partition] = (max(start, low), high)
    return ranges


def open_count(kafka: KafkaSettings, consumer_group: str, timeout_s: float = 10.0) -> int:
    """How many dead letters wait for a replay (a cutover gate wants 0)."""
    topic = kafka.dlq_topic
    metadata = make_admin(kafka).list_topics(timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return 0
    consumer = make_consumer(kafka, replay_group(consumer_group))
    try:
        ranges = _open_ranges(consumer, topic, list(metadata.partitions), timeout_s)
    finally:
        consumer.close()
    return sum(max(0, end - start) for start, end in ranges.values())


def replay(kafka: KafkaSettings, consumer_group: str, timeout_s: float = 30.0) -> int:
    """Re-submit every open dead letter to the change topic, then mark them replayed."""
    letters = open_dead_letters(kafka, consumer_group, timeout_s=timeout_s)
    if not letters:
        return 0
    producer = make_producer(kafka)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(f"{err.name()}: {err.str()}")

    for letter in letters:
        origin = f"{kafka.dlq_topic}[{letter.dlq_partition}]@{letter.dlq_offset}"
        headers: list[tuple[str, str | bytes | None]] = [(f"{HEADER}replayed-from", origin)]
        producer.produce(
            letter.headers.get("topic", kafka.topic),
            letter.value,
            letter.key,
            headers=headers,
            on_delivery=delivered,
        )
    if producer.flush(timeout_s) or failures:
        raise BluegreenError(
            f"replay not acknowledged ({'; '.join(failures[:3]) or 'timeout'}); nothing was "
            "marked replayed, run it again"
        )
    newest: dict[int, int] = {}
    for letter in letters:
        newest[letter.dlq_partition] = max(newest.get(letter.dlq_partition, -1), letter.dlq_offset)
    consumer = make_consumer(kafka, replay_group(consumer_group))
    try:
        consumer.commit(
            offsets=[TopicPartition(kafka.dlq_topic, p, o + 1) for p, o in newest.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()
    return len(letters)
