"""What `bluegreen status` shows: every figure an operator needs, gathered read-only.

Each part is collected on its own: a service that is down makes its part empty and
adds a named problem, it does not hide the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaException, TopicPartition

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.kafka import make_admin, make_consumer
from consumers import dlq
from producers.blue_setup import SlotHealth, slot_health
from schemas.domain import Domain


@dataclass
class SnapshotStatus:
    tasks_by_state: dict[str, int]
    rows: int
    last_errors: list[dict[str, Any]]


@dataclass
class Status:
    collected_at: datetime
    phase: str | None = None
    reads_on: str | None = None
    router_epoch: int | None = None
    switched_at: datetime | None = None
    snapshot: SnapshotStatus | None = None
    slot: SlotHealth | None = None
    consumer_lag: dict[int, int] | None = None
    dlq_open: int | None = None  # not replayed, superseded ones aside
    dlq_superseded: int | None = None  # not replayed, but green holds newer versions
    verification: dict[str, Any] | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total_lag(self) -> int | None:
        return None if self.consumer_lag is None else sum(self.consumer_lag.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.slot is not None:
            data["slot"]["lag_bytes"] = self.slot.lag_bytes
            data["slot"]["retained_bytes"] = self.slot.retained_bytes
        data["total_lag"] = self.total_lag
        return data


def collect(settings: Settings, domain: Domain) -> Status:
    status = Status(collected_at=datetime.now().astimezone())
    _part(status, "control database", lambda: _control(settings, status))
    _part(status, "blue", lambda: _blue(settings, status))
    _part(status, "kafka", lambda: _kafka(settings, status))
    _part(status, "dead letters", lambda: _dead_letters(settings, domain, status))
    return status


def _part(status: Status, name: str, collect_part: Any) -> None:
    try:
        collect_part()
    except (psycopg.Error, KafkaException, OSError) as exc:
        status.problems.append(f"{name}: {str(exc).strip()[:300]}")


def _control(settings: Settings, status: Status) -> None:
    with db.connect(settings.control_dsn, autocommit=True, connect_timeout=5) as conn:
        if control.migration_exists(conn):
            status.phase = control.phase(conn).value
            router = control.router(conn)
            status.reads_on, status.router_epoch = router.color, router.epoch
            status.switched_at = router.switched_at
            status.verification = control.last_verification(conn)
            status.audit = [
                {
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "to": e.to_phase,
                    "reason": e.reason,
                }
                for e in control.audit_trail(conn, limit=5)
            ]
        counts = control.task_counts(conn) if control.task_queue_exists(conn) else None
        if counts is not None and counts.total:
            status.snapshot = SnapshotStatus(
                tasks_by_state=counts.by_state,
                rows=counts.rows,
                last_errors=[
                    {"task": i, "state": s, "attempts": a, "error": e}
                    for i, s, e, a in counts.last_errors
                ],
            )


def _blue(settings: Settings, status: Status) -> None:
    with db.connect(settings.blue_dsn, autocommit=True, connect_timeout=5) as blue:
        status.slot = slot_health(blue, settings.cdc.slot)


def _kafka(settings: Settings, status: Status) -> None:
    kafka = settings.kafka
    admin = make_admin(kafka)
    topic = admin.list_topics(topic=kafka.topic, timeout=5).topics.get(kafka.topic)
    if topic is None or topic.error is not None:
        return
    consumer = make_consumer(kafka, settings.consumer.group_id)
    try:
        partitions = [TopicPartition(kafka.topic, p) for p in sorted(topic.partitions)]
        committed = consumer.committed(partitions, timeout=5)
        lag = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(kafka.topic, tp.partition), timeout=5
            )
            start = tp.offset if tp.offset >= 0 else low
            lag[tp.partition] = max(0, high - start)
        status.consumer_lag = lag
    finally:
        consumer.close()


def _dead_letters(settings: Settings, domain: Domain, status: Status) -> None:
    found = dlq.counts(settings.kafka, settings.consumer.group_id, settings.green_dsn, domain)
    status.dlq_open, status.dlq_superseded = found.open, found.superseded
