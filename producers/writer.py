"""The one place a producer touches Kafka.

Messages are sent under a ``Token`` (a snapshot task, a CDC transaction). The
broker's delivery reports, served by ``poll``, count acknowledgements per token;
a sealed token whose every message was acknowledged is *finished*, and only then
may its source position be confirmed (task COMPLETED, slot advanced). A failed
delivery fails its token. The delivery callback is the token's own bound method
(no closure per message) and never blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from bluegreen.core.metrics import Metrics

_POLL_EVERY = 1_000  # serve delivery reports every N sends, never per message
_QUEUE_FULL_WAIT_S = 0.05


@dataclass(eq=False)
class Token:
    """A unit of source position: finished when sealed and every message is settled."""

    label: Any
    sent: int = 0
    acked: int = 0
    failed: int = 0
    sealed: bool = False
    errors: list[str] = field(default_factory=list)
    _writer: KafkaWriter | None = field(default=None, repr=False)

    @property
    def settled(self) -> bool:
        return self.sealed and self.acked + self.failed == self.sent

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{err.name()}: {err.str()}")
        writer = self._writer
        if writer is not None:
            writer.in_flight -= 1
            if self.settled:
                writer.finish(self)


class KafkaWriter:
    def __init__(
        self, producer: Producer, topic: str, *, name: str, metrics: Metrics | None = None
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._name = name
        self._metrics = metrics
        self._finished: deque[Token] = deque()
        self._unpolled = 0
        self.in_flight = 0

    def token(self, label: Any) -> Token:
        return Token(label=label, _writer=self)

    def send(
        self, token: Token, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        """Queue one message; waits (serving delivery reports) while librdkafka's queue is full."""
        self._check_open(token)
        while True:
            try:
                if partition is None:
                    self._producer.produce(self.topic, value, key, on_delivery=token.on_delivery)
                else:
                    self._producer.produce(
                        self.topic, value, key, partition=partition, on_delivery=token.on_delivery
                    )
                break
            except BufferError:
                # Backpressure: memory stays bounded by queue.buffering.max.*.
                self._producer.poll(_QUEUE_FULL_WAIT_S)
        self._queued(token, 1)

    def send_batch(self, token: Token, messages: list[dict[str, Any]]) -> None:
        """Queue many messages ({'key', 'value'}) in one call: the snapshot's hot path."""
        self._check_open(token)
        pending = messages
        while pending:
            queued = self._producer.produce_batch(
                self.topic, pending, on_delivery=token.on_delivery
            )
            self._queued(token, queued)
            if queued == len(pending):
                return
            retry = []
            for message in pending:
                error: KafkaError | None = message.pop("_error", None)
                if error is None:
                    continue
                if error.code() != KafkaError._QUEUE_FULL:
                    token.failed += 1
                    token.sent += 1
                    token.errors.append(f"{error.name()}: {error.str()}")
                else:
                    retry.append(message)
            pending = retry
            if pending:
                self._producer.poll(_QUEUE_FULL_WAIT_S)

    def _check_open(self, token: Token) -> None:
        if token.sealed:
            raise RuntimeError(f"token {token.label!r} is sealed; no more messages under it")

    def _queued(self, token: Token, count: int) -> None:
        token.sent += count
        self.in_flight += count
        self._unpolled += count
        if self._unpolled >= _POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def seal(self, token: Token) -> None:
        """No more messages under this token; it finishes once all are settled."""
        token.sealed = True
        if token.settled:
            self.finish(token)

    def poll(self, timeout: float = 0.0) -> int:
        self._unpolled = 0
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Wait for every delivery report; return how many messages are still unsettled."""
        return int(self._producer.flush(timeout))

    def finished(self) -> list[Token]:
        """Tokens finished since the last call, in the order they finished."""
        done = list(self._finished)
        self._finished.clear()
        return done

    def finish(self, token: Token) -> None:
        # Metrics per token, not per message: the delivery callback is a hot path.
        if self._metrics is not None:
            self._metrics.kafka_messages_produced.labels(self._name).inc(token.acked)
            if token.failed:
                self._metrics.kafka_produce_errors.labels(self._name).inc(token.failed)
        self._finished.append(token)
