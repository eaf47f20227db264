"""Migration figures as metrics: phase, where reads go, open and superseded dead letters.

The consumer refreshes them now and then from the control database and Kafka, so
a dashboard and the alert rules see the migration's state next to its flow.
"""

from __future__ import annotations

import time

import psycopg
from confluent_kafka import KafkaException

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from consumers import dlq
from schemas.domain import Domain

# The refresh runs in the consumer's loop: it reads and classifies at most this many open
# dead letters; beyond that they count as open (the cutover gate reads them all).
_DLQ_SCAN_LIMIT = 2_000


class MigrationGauges:
    def __init__(
        self, settings: Settings, metrics: Metrics, domain: Domain, interval_s: float = 10.0
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._metrics = metrics
        self._interval_s = interval_s
        self._last = 0.0
        self._log = get_logger(component="migration-gauges")

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._last >= self._interval_s:
            self.refresh()

    def refresh(self) -> None:
        self._last = time.monotonic()
        try:
            with db.connect(self._settings.control_dsn, autocommit=True, connect_timeout=3) as conn:
                if control.migration_exists(conn):
                    current = control.phase(conn)
                    for phase in control.Phase:
                        self._metrics.migration_phase.labels(phase.value).set(phase == current)
                    router = control.router(conn)
                    self._metrics.reads_on_green.set(router.color == "green")
                    self._metrics.router_epoch.set(router.epoch)
            letters = dlq.counts(
                self._settings.kafka,
                self._settings.consumer.group_id,
                self._settings.green_dsn,
                self._domain,
                timeout_s=3,
                scan_limit=_DLQ_SCAN_LIMIT,
            )
            self._metrics.dlq_open.set(letters.open)
            self._metrics.dlq_superseded.set(letters.superseded)
        except (psycopg.Error, KafkaException, OSError) as exc:
            self._log.debug("migration gauges not refreshed", error=str(exc)[:200])
