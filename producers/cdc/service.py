"""`bluegreen cdc`: the long-lived capture service.

One loop: read the replication stream, turn changes into envelopes, produce
them, and confirm to the slot only the end LSN of transactions whose every
message the broker acknowledged, in commit order. kill -9 at any moment loses
nothing: the slot restarts from the last confirmed transaction and replays the
rest (duplicates are harmless downstream).

Idle blue: when nothing is in flight, the keepalive's WAL position is confirmed
so the slot never holds WAL back; heartbeats (`pg_logical_emit_message`) every
few seconds keep the lag figures and every partition's freshness current.

Riding through restarts. When blue's connection is lost (restart, crash,
network) or the broker refuses or times out a message (librdkafka retries on its
own until `message.timeout.ms`), the service gives the stream up: it waits a
bounded time for the broker's reports on what it already sent (blue lost only),
confirms the acknowledged prefix, drops every other transaction, the open one
and the decoder's relation cache (and replaces a producer that hit a fatal
idempotence error; messages still queued in a live one are left to it). Then it
reconnects with capped exponential backoff (`bluegreen.core.retry.Reconnector`: one
log line per attempt, `bluegreen_dependency_up{dependency}`) and starts the
stream again at the slot's confirmed position, so everything dropped is
replayed. A dependency down for `cdc.reconnect_timeout_s` ends the service with
a one-line `DependencyError`. While the broker is away, reading pauses once
`_MAX_IN_FLIGHT` messages wait, so memory stays bounded and the loop still
answers blue and SIGTERM.
"""

from __future__ import annotations

from confluent_kafka import Producer

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector
from producers.blue_setup import prepare_blue
from producers.cdc.changes import ChangeBuilder
from producers.cdc.errors import CdcError, KafkaDeliveryError
from producers.cdc.kafka_link import KafkaLink
from producers.cdc.loop import CaptureLoop
from producers.cdc.pgoutput import Message
from producers.cdc.publisher import Publisher
from producers.cdc.source_link import SourceLink
from schemas.codec import Codec, codec_for
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

__all__ = ["CdcError", "CdcService", "KafkaDeliveryError"]


class CdcService(CaptureLoop):
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        metrics: Metrics,
        *,
        producer: Producer | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        log = get_logger(service="cdc", slot=settings.cdc.slot)
        codec = codec or codec_for(source.avro)
        timeout_s = settings.cdc.reconnect_timeout_s
        gauge = metrics.dependency_up
        blue = Reconnector("cdc", "blue", db.describe(settings.blue_dsn), timeout_s, gauge=gauge)
        kafka = Reconnector(
            "cdc", "kafka", settings.kafka.bootstrap_servers, timeout_s, gauge=gauge
        )
        link = SourceLink(
            "blue",
            settings.blue_dsn,
            settings.cdc.slot,
            settings.cdc.publication,
            metrics=metrics.forward_capture(),
            log=log,
            retained_wal_warning_bytes=settings.cdc.retained_wal_warning_bytes,
        )
        kafka_link = KafkaLink(settings.kafka, metrics, kafka, log)
        publisher = Publisher(
            codec, EnvelopeEncoder(codec, source.columns), metrics, kafka_link.acknowledged
        )
        super().__init__(
            cdc=settings.cdc,
            metrics=metrics,
            log=log,
            source=blue,
            kafka=kafka,
            link=link,
            kafka_link=kafka_link,
            publisher=publisher,
            producer=producer,
        )
        self._forward = publisher
        self._builder = ChangeBuilder(source, "")

    def _prepare(self) -> int | None:
        settings = self.settings
        return self._retry(
            self._source, lambda: prepare_blue(settings.blue_dsn, self.source, settings.cdc)
        )

    def _new_builder(self) -> None:
        self._builder = ChangeBuilder(self.source, self._link.database)

    def _feed(self, message: Message) -> None:
        builder = self._builder
        for action in builder.feed(message):
            self._forward.act(action, builder.table)
