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
from bluegreen.core.kafka import make_admin, make_consumer, topic_ends
from consumers import dlq, touched
from cutover import follow_gate, follow_state, shadow_gate
from producers.blue_setup import SlotHealth, slot_health
from schemas.domain import Domain
from schemas.lsn import format_lsn


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
    writes_on: str | None = None
    write_epoch: int | None = None
    writes_paused: bool | None = None
    refresh_pending: bool | None = None
    # The reverse direction (green -> blue), None when it does not exist (n/a): green's
    # reverse slot, and the reverse applier's lag in messages per partition.
    reverse_slot: SlotHealth | None = None
    reverse_lag: dict[int, int] | None = None
    snapshot: SnapshotStatus | None = None
    slot: SlotHealth | None = None
    consumer_lag: dict[int, int] | None = None
    dlq_open: int | None = None  # not replayed, superseded ones aside
    dlq_superseded: int | None = None  # not replayed, but green holds newer versions
    verification: dict[str, Any] | None = None
    # The continuous verifier (`verify --follow`): its watermark and what it lists.
    following: dict[str, Any] | None = None
    # Shadowed reads over the gate's window (every router's counts) and the gate's verdict.
    shadow: dict[str, Any] | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total_lag(self) -> int | None:
        return None if self.consumer_lag is None else sum(self.consumer_lag.values())

    @property
    def total_reverse_lag(self) -> int | None:
        return None if self.reverse_lag is None else sum(self.reverse_lag.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.slot is not None:
            data["slot"]["lag_bytes"] = self.slot.lag_bytes
            data["slot"]["retained_bytes"] = self.slot.retained_bytes
        if self.reverse_slot is not None:
            data["reverse_slot"]["lag_bytes"] = self.reverse_slot.lag_bytes
            data["reverse_slot"]["retained_bytes"] = self.reverse_slot.retained_bytes
        data["total_lag"] = self.total_lag
        data["total_reverse_lag"] = self.total_reverse_lag
        return data


def collect(settings: Settings, domain: Domain) -> Status:
    status = Status(collected_at=datetime.now().astimezone())
    _part(status, "control database", lambda: _control(settings, status))
    _part(status, "blue", lambda: _blue(settings, status))
    _part(status, "kafka", lambda: _kafka(settings, status))
    _part(status, "dead letters", lambda: _dead_letters(settings, domain, status))
    _part(status, "reverse direction", lambda: _reverse(settings, status))
    _part(status, "continuous verification", lambda: _following(settings, status))
    return status


def _following(settings: Settings, status: Status) -> None:
    with db.connect(settings.green_dsn, autocommit=True, connect_timeout=5) as conn:
        state = follow_state.read(conn)
        backlog = touched.backlog(conn) if state is not None else 0
    if state is None:
        return
    status.following = {
        "watermark_lsn": format_lsn(state.watermark_lsn),
        "watermark_age_s": round(state.watermark_age_s, 1),
        "running": state.heartbeat_age_s <= follow_gate.FRESH_S,
        "differing": len(state.differing),
        "differing_sample": state.differing[:10],
        "pending": len(state.pending),
        "queued_batches": backlog,
        "keys_verified": state.keys_verified,
        "full_pass_skus": state.full_pass_skus,
        "full_pass_seconds": round(state.full_pass_seconds, 2),
    }


def _part(status: Status, name: str, collect_part: Any) -> None:
    try:
        collect_part()
    except (psycopg.Error, KafkaException, OSError) as exc:
        status.problems.append(f"{name}: {str(exc).strip()[:300]}")


def _control(settings: Settings, status: Status) -> None:
    minutes = settings.shadow.gate_window_minutes
    with db.connect(settings.control_dsn, autocommit=True, connect_timeout=5) as conn:
        if control.migration_exists(conn):
            status.phase = control.phase(conn).value
            router = control.router(conn)
            status.reads_on, status.router_epoch = router.color, router.epoch
            status.switched_at = router.switched_at
            writes = control.write_state(conn)
            status.writes_on, status.write_epoch = writes.route.color, writes.route.epoch
            status.writes_paused, status.refresh_pending = (
                writes.route.paused,
                writes.refresh_pending,
            )
            status.verification = control.last_verification(conn)
            status.shadow = _shadow(settings, control.shadow_window(conn, minutes))
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


def _shadow(settings: Settings, window: control.ShadowWindow | None) -> dict[str, Any]:
    counts = window.counts if window is not None else control.ShadowCounts()
    gate = shadow_gate.judge(window, settings.shadow)
    return {
        "window_minutes": settings.shadow.gate_window_minutes,
        "routers": window.clients if window is not None else 0,
        **asdict(counts),
        "gate_required": settings.shadow.gate_min_compared > 0,
        "gate_passes": gate.ok,
        "gate": gate.figure,
    }


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


# Green's reverse slot (producers.reverse.setup creates it while writes are on green).
REVERSE_SLOT = "bluegreen_reverse"


def _reverse(settings: Settings, status: Status) -> None:
    """Read defensively: the slot, the positions table and the topic may not exist."""
    with db.connect(settings.green_dsn, autocommit=True, connect_timeout=5) as green:
        # Slots are the cluster's: only the one in green's own database is ours.
        ours = green.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
            "AND database = current_database()",
            (REVERSE_SLOT,),
        ).fetchone()
        status.reverse_slot = slot_health(green, REVERSE_SLOT) if ours else None
    with db.connect(settings.blue_dsn, autocommit=True, connect_timeout=5) as blue:
        exists = blue.execute("SELECT to_regclass('bluegreen_sync.reverse_position')").fetchone()
        if exists is None or exists[0] is None:
            return
        rows = blue.execute(
            "SELECT partition, next_offset FROM bluegreen_sync.reverse_position WHERE topic = %s",
            (settings.kafka.reverse_topic,),
        ).fetchall()
    applied = {int(p): int(o) for p, o in rows}
    kafka = settings.kafka.model_copy(update={"topic": settings.kafka.reverse_topic})
    topic = make_admin(kafka).list_topics(topic=kafka.topic, timeout=5).topics.get(kafka.topic)
    if topic is None or topic.error is not None:
        return
    ends = topic_ends(kafka.model_copy(update={"partitions": len(topic.partitions)}), "status")
    status.reverse_lag = {p: max(0, end - applied.get(p, 0)) for p, end in ends.items()}
