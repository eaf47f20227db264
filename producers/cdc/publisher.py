"""Transactions into Kafka, and their confirmation in commit order.

Each source transaction (or standalone logical message) is one unit: its messages
share one delivery token, sealed at commit. ``settle`` confirms a unit's end LSN only
once the broker acknowledged every message of it and of every unit before it; the
first unit the broker refused stops the confirmation there (nothing from it on is
confirmed), so the slot never moves past a change Kafka does not hold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bluegreen.core.errors import BluegreenError
from bluegreen.core.metrics import CaptureMetrics, Metrics
from producers.cdc.changes import Broadcast, KeyedChange, Standalone, TxnBegin, TxnEnd
from producers.cdc.errors import CdcError, KafkaDeliveryError
from producers.cdc.kafka_link import PERMANENT_KAFKA_ERRORS
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec
from schemas.envelope import CONNECTOR_CDC, SourceTable, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.lsn import format_lsn

_LATENCY_SAMPLES = 200_000


@dataclass(eq=False)
class Unit:
    """One transaction (or standalone message) and the source position it confirms."""

    token: Token
    end_lsn: int
    commit_ts_ms: int
    ops: dict[str, int]


class UnitPublisher:
    """Units in flight, oldest first, and how far they confirm the source.

    What a unit's messages are is the caller's business (blue's envelopes, green's
    GreenChanges): it sends encoded values with ``send``/``broadcast`` between ``begin``
    and ``end``, or one ``standalone`` message.
    """

    def __init__(
        self,
        metrics: CaptureMetrics,
        on_acknowledged: Callable[[], None],
        *,
        command: str = "bluegreen cdc",
    ) -> None:
        self._metrics = metrics
        self._on_acknowledged = on_acknowledged
        self._command = command
        self.writer: KafkaWriter  # set by attach(), replaced with a new producer
        self.partitions = 0
        self.pending: deque[Unit] = deque()
        self.open: Unit | None = None
        self.confirmed_lsn = 0
        self.last_acked_commit_ms: int | None = None
        self.latencies_ms: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.events_acked = 0

    def attach(self, writer: KafkaWriter, partitions: int) -> None:
        self.writer = writer
        self.partitions = partitions

    def begin(self, commit_lsn: int, commit_ts_ms: int) -> None:
        self.open = Unit(self.writer.token(commit_lsn), 0, commit_ts_ms, {})

    def send(self, key: bytes, value: bytes, op: str) -> None:
        """One keyed message of the open transaction (its key chooses the partition)."""
        unit = self._require_open()
        self.writer.send(unit.token, key, value)
        self._count(unit, op)

    def broadcast(self, value: bytes, op: str) -> None:
        """One message of the open transaction, to every partition."""
        self._broadcast(self._require_open(), value, op)

    def end(self, end_lsn: int, *, skipped: bool = False) -> None:
        """The open transaction is complete: it confirms `end_lsn` once acknowledged."""
        unit = self._require_open()
        unit.end_lsn = end_lsn
        self.writer.seal(unit.token)
        self.pending.append(unit)
        self.open = None
        if skipped:
            self._metrics.skipped_transactions.inc()

    def standalone(self, lsn: int, ts_ms: int, value: bytes, op: str) -> None:
        """A non-transactional message, a unit of its own, to every partition."""
        unit = Unit(self.writer.token(lsn), lsn, ts_ms, {})
        self._broadcast(unit, value, op)
        self.writer.seal(unit.token)
        self.pending.append(unit)

    def _require_open(self) -> Unit:
        if self.open is None:
            raise CdcError("a change arrived outside a transaction")
        return self.open

    def _broadcast(self, unit: Unit, value: bytes, op: str) -> None:
        for partition in range(self.partitions):
            self.writer.send(unit.token, None, value, partition=partition)
        self._count(unit, op)

    @staticmethod
    def _count(unit: Unit, op: str) -> None:
        unit.ops[op] = unit.ops.get(op, 0) + 1

    def settle(self) -> Unit | None:
        """Confirm, in commit order, every transaction whose messages were all acknowledged.

        Returns the first settled transaction the broker refused (it stays pending):
        nothing from it on is confirmed.
        """
        self.writer.finished()  # tokens are checked in order below; this only clears the list
        while self.pending and self.pending[0].token.settled:
            unit = self.pending[0]
            if not unit.token.ok:
                return unit
            self.pending.popleft()
            self._on_acknowledged()  # the broker acknowledges again
            self.confirmed_lsn = max(self.confirmed_lsn, unit.end_lsn)
            for op, count in unit.ops.items():
                self._metrics.events.labels(op).inc(count)
                self.events_acked += count
            latency_s = max(0.0, now_ms() - unit.commit_ts_ms) / 1000
            self._metrics.commit_to_ack_seconds.observe(latency_s)
            self.latencies_ms.append(latency_s * 1000)
            self.last_acked_commit_ms = unit.commit_ts_ms
        return None

    def refusal(self, unit: Unit) -> BluegreenError:
        """Why the broker refused `unit`: for good (CdcError) or until a restart."""
        cause = (
            f"the broker did not acknowledge messages of the transaction ending at "
            f"{format_lsn(unit.end_lsn)}: {'; '.join(unit.token.errors)}"
        )
        names = {error.split(":", 1)[0] for error in unit.token.errors}
        if names & PERMANENT_KAFKA_ERRORS:
            return CdcError(
                f"{cause}. Nothing from it on is confirmed; fix the cause and restart "
                f"`{self._command}`"
            )
        return KafkaDeliveryError(cause, fatal="_FATAL" in names)

    def idle(self) -> bool:
        return self.open is None and not self.pending and self.writer.in_flight == 0

    def drop(self) -> int:
        """Forget every unconfirmed transaction (the open one too); how many there were.

        Messages of dropped transactions still queued are left to librdkafka: delivered,
        they are duplicates of the replay; timed out, nothing depends on them. (Purging
        them would leave a gap in the idempotent producer's sequence numbers.)
        """
        dropped = len(self.pending) + (self.open is not None)
        self.pending.clear()
        self.open = None
        return dropped


class Publisher(UnitPublisher):
    """Blue's transactions: change envelopes, fences, heartbeats and truncates."""

    def __init__(
        self,
        codec: Codec,
        encoder: EnvelopeEncoder,
        metrics: Metrics,
        on_acknowledged: Callable[[], None],
    ) -> None:
        super().__init__(metrics.forward_capture(), on_acknowledged)
        self._codec = codec
        self._encoder = encoder

    def act(self, action: Any, table: SourceTable) -> None:
        """Send what the change builder made of the stream, unit by unit."""
        if isinstance(action, TxnBegin):
            self.begin(action.commit_lsn, action.commit_ts_ms)
        elif isinstance(action, KeyedChange):
            value = self._encoder.encode_change(
                action.op,
                table,
                before=action.before,
                after=action.after,
                connector=CONNECTOR_CDC,
                version=action.version,
                txid=action.txid,
                ts_ms=action.ts_ms,
                event_ts_ms=now_ms(),
            )
            self.send(action.key, value, action.op.value)
        elif isinstance(action, Broadcast):
            self.broadcast(self._codec.encode(action.event), action.event["op"])
        elif isinstance(action, TxnEnd):
            self.end(action.end_lsn, skipped=action.skipped)
        elif isinstance(action, Standalone):
            event = action.event
            self.standalone(action.lsn, event["ts_ms"], self._codec.encode(event), event["op"])
