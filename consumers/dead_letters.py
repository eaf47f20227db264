"""Routing a batch's dead letters to the dead-letter topic, each message once.

A message rejected by a step (decode, transform, validate, apply) goes to the
dead-letter topic unchanged (consumers/dlq.py writes it). After a rewind the same
messages are consumed again and rejected again: a dead letter already written is
not written twice, until Kafka's committed offset has passed it and it can never
come back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from confluent_kafka import Message

from consumers.batch import Rejected


class DlqSink(Protocol):
    """consumers.dlq.DlqWriter: raises DlqWriteError when Kafka does not take a letter."""

    def send(self, message: Message, step: str, error: BaseException) -> None: ...
    def flush(self, timeout_s: float = ...) -> None: ...


class DeadLetters:
    def __init__(self, sink: DlqSink) -> None:
        self._sink = sink
        self._sent: set[tuple[int, int]] = set()  # (partition, offset) not yet behind

    def send(self, rejected: list[Rejected]) -> None:
        """Write and acknowledge these letters (DlqWriteError: not all were taken)."""
        sent = 0
        for letter in rejected:
            origin = (int(letter.message.partition() or 0), int(letter.message.offset() or 0))
            if origin in self._sent:
                continue  # consumed again after a rewind: written once is enough
            self._sink.send(letter.message, letter.step, letter.error)
            self._sent.add(origin)
            sent += 1
        if sent:
            self._sink.flush()

    def committed(self, committed: Mapping[int, int]) -> None:
        """Kafka's committed offsets moved: forget the letters they passed."""
        if self._sent:  # those behind green's position are never consumed again
            self._sent = {(p, o) for p, o in self._sent if o >= committed.get(p, 0)}

    @property
    def pending(self) -> frozenset[tuple[int, int]]:
        """Letters written and not yet behind the committed offsets."""
        return frozenset(self._sent)
