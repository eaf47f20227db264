"""Dead letters: messages that cannot be decoded, transformed, validated or applied.

Each goes to the dead-letter topic unchanged (same key and value) with headers
naming the step, the reason, the exception class and the original topic,
partition, offset and timestamp. Dead letters of a batch are produced and
acknowledged before the batch's offsets are committed, so none is ever lost.

The limit stops the service when too many messages fail — by share of a sliding
window or in a row — because a bad deploy must not dead-letter the catalog.

Which dead letters are still open is a Kafka fact: the replay group's committed
offsets on the dead-letter topic. An open letter is *superseded* when green has
since applied a newer version of every key its change would touch (the row was
fixed in blue and the fix went through): replaying it would change nothing, or
fail the same way again. Superseded letters do not block a cutover. Which keys a
change touches and what green holds of them is the domain's to say
(``Domain.superseded``); a domain that says nothing has no superseded letters.
`bluegreen dlq replay` re-submits the other open ones to the change topic (their
key keeps them on their partition, the version guard applies as for any change),
skips the superseded ones, and then commits past both.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from confluent_kafka import KafkaError, Message, Producer, TopicPartition
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.config import ConsumerSettings, KafkaSettings
from bluegreen.core.errors import BluegreenError, SerializationError
from bluegreen.core.kafka import make_admin, make_consumer, make_producer
from bluegreen.core.metrics import Metrics
from schemas.codec import Codec
from schemas.domain import Domain, Supersession, VersionedKey
from schemas.envelope import version_of

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
    # Green holds every key of its change at a newer version (see `classify`).
    superseded: bool = False

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
    """The dead letters not replayed yet, oldest first per partition (not classified)."""
    return read_open(kafka, consumer_group, limit, timeout_s)[0]


def read_open(
    kafka: KafkaSettings, consumer_group: str, limit: int | None = None, timeout_s: float = 10.0
) -> tuple[list[DeadLetter], int]:
    """Up to `limit` open letters, and how many are open in all (from the same ranges)."""
    topic = kafka.dlq_topic
    metadata = make_admin(kafka).list_topics(timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return [], 0
    consumer = make_consumer(kafka, replay_group(consumer_group))
    try:
        ranges = _open_ranges(consumer, topic, list(metadata.partitions), timeout_s)
        total = sum(max(0, end - start) for start, end in ranges.values())
        letters: list[DeadLetter] = []
        for partition, (start, end) in ranges.items():
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
                    if at >= end:  # written after the ranges were read
                        offset = end
                        break
                    letters.append(DeadLetter(partition, at, msg.key(), msg.value(), _headers(msg)))
                    offset = at + 1
                    if limit is not None and len(letters) >= limit:
                        return letters, total
        return letters, total
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
    """How many dead letters are past the replay group's offsets, superseded or not
    (Kafka alone; `counts` tells the superseded ones apart)."""
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


def classify(
    letters: Sequence[DeadLetter],
    green_dsn: SecretStr,
    domain: Domain,
    codec: Codec | None = None,
) -> list[DeadLetter]:
    """The letters, each marked superseded when green holds every key its change
    would touch at a strictly newer version. One query to green for them all; a letter
    that does not decode, or names no key, is never superseded."""
    supersession = domain.superseded
    if supersession is None:
        return list(letters)
    codec = codec or domain.codec()
    wanted: dict[int, list[VersionedKey]] = {}
    for index, letter in enumerate(letters):
        keys = _versioned_keys(letter, codec, supersession)
        if keys:
            wanted[index] = keys
    if not wanted:
        return list(letters)
    with db.connect(green_dsn, autocommit=True, connect_timeout=5) as green:
        newer = supersession.newer_in_green(green, {k for keys in wanted.values() for k in keys})
    return [
        replace(letter, superseded=True)
        if index in wanted and all(k in newer for k in wanted[index])
        else letter
        for index, letter in enumerate(letters)
    ]


def _versioned_keys(
    letter: DeadLetter, codec: Codec, supersession: Supersession
) -> list[VersionedKey] | None:
    if letter.value is None:
        return None
    try:
        event = codec.decode(letter.value)
    except SerializationError:
        return None
    keys = supersession.keys(event)
    if not keys:
        return None
    version = version_of(event)
    return [(*key, version.lsn, version.seq) for key in keys]


@dataclass(frozen=True)
class DlqCounts:
    open: int  # not replayed and not superseded: what blocks a cutover
    superseded: int  # not replayed, but green has applied newer versions of all their keys


def counts(
    kafka: KafkaSettings,
    consumer_group: str,
    green_dsn: SecretStr,
    domain: Domain,
    *,
    timeout_s: float = 10.0,
    scan_limit: int | None = None,
) -> DlqCounts:
    """Open and superseded dead letters. Only the first `scan_limit` are read and
    classified; any others (and any not read within the timeout) count as open."""
    letters, total = read_open(kafka, consumer_group, scan_limit, timeout_s)
    superseded = sum(letter.superseded for letter in classify(letters, green_dsn, domain))
    return DlqCounts(open=total - superseded, superseded=superseded)


@dataclass(frozen=True)
class ReplayReport:
    replayed: int  # re-submitted to the change topic
    superseded: int  # skipped: green already holds newer versions of their keys


def replay_open(
    kafka: KafkaSettings,
    consumer_group: str,
    green_dsn: SecretStr,
    domain: Domain,
    timeout_s: float = 30.0,
) -> ReplayReport:
    """The operator's replay: re-submit the open letters that are not superseded, skip
    the superseded ones (they would change nothing, or fail again), mark all replayed."""
    letters = open_dead_letters(kafka, consumer_group, timeout_s=timeout_s)
    letters = classify(letters, green_dsn, domain)
    replayed = _replay(kafka, consumer_group, letters, timeout_s)
    return ReplayReport(replayed=replayed, superseded=len(letters) - replayed)


def _replay(
    kafka: KafkaSettings, consumer_group: str, letters: Sequence[DeadLetter], timeout_s: float
) -> int:
    """Produce the letters not superseded to their original topic, then commit the replay
    group past every letter given. Returns how many were produced."""
    if not letters:
        return 0
    producer = make_producer(kafka)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(f"{err.name()}: {err.str()}")

    to_send = [letter for letter in letters if not letter.superseded]
    for letter in to_send:
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
    return len(to_send)
