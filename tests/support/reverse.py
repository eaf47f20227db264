"""The reverse direction in tests: writes on green, their GreenChange events on the
reverse topic (produced by the test, as the reverse capture would), and waiting for
blue's reverse applier."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg.rows import dict_row

from bluegreen.core import db
from bluegreen.core.config import ReverseApplySettings, Settings
from bluegreen.core.kafka import delete_topics, ensure_topic, make_producer, topic_ends
from bluegreen.core.metrics import Metrics
from consumers.reverse.service import ReverseApplyService
from schemas import reverse
from schemas.catalog import CATALOG
from schemas.control import FENCE_PREFIX
from schemas.envelope import Op, Version, now_ms
from schemas.lsn import parse_lsn
from tests.support.service_thread import ServiceThread

Statement = tuple[str, tuple[Any, ...]]


@contextmanager
def reverse_settings(settings: Settings) -> Iterator[Settings]:
    """The test's own reverse topic (deleted afterwards) and a small batch."""
    kafka = settings.kafka.model_copy(update={"reverse_topic": f"{settings.kafka.topic}.reverse"})
    own = settings.model_copy(
        update={
            "kafka": kafka,
            "reverse_apply": ReverseApplySettings(
                group_id=f"rev-{settings.kafka.topic}", batch_max_messages=200
            ),
        }
    )
    ensure_topic(kafka, kafka.reverse_topic, kafka.partitions)
    try:
        yield own
    finally:
        delete_topics(kafka, [kafka.reverse_topic])


def write_green(settings: Settings, statements: Sequence[Statement]) -> int:
    """Run the statements in one green transaction; its commit LSN (near enough: the
    WAL position right after the commit)."""
    with db.connect(settings.green_dsn) as conn:
        for query, params in statements:
            conn.execute(query, params)  # type: ignore[arg-type]  # tests' constant SQL
        conn.commit()
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def changes(
    keys: Sequence[str], lsn: int, table: str = "catalog.product"
) -> list[reverse.GreenChange]:
    ts = now_ms()
    return [
        reverse.GreenChange(key, table, Op.UPDATE, Version(lsn, seq), ts)
        for seq, key in enumerate(keys, 1)
    ]


def produce(settings: Settings, events: Sequence[reverse.GreenChange]) -> None:
    producer = make_producer(settings.kafka)
    for change in events:
        producer.produce(settings.kafka.reverse_topic, reverse.encode(change), change.key.encode())
    assert producer.flush(30) == 0


def produce_fence(settings: Settings, fence_id: str, lsn: int) -> None:
    """A fence on every partition of the reverse topic, as the reverse capture sends it."""
    producer = make_producer(settings.kafka)
    fence = reverse.GreenChange(
        "", "", Op.MESSAGE, Version(lsn, 1), now_ms(), FENCE_PREFIX, fence_id
    )
    for partition in range(settings.kafka.partitions):
        producer.produce(
            settings.kafka.reverse_topic, reverse.encode(fence), b"", partition=partition
        )
    assert producer.flush(30) == 0


def blue_positions(settings: Settings) -> dict[int, int]:
    with db.connect(settings.blue_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('bluegreen_sync.reverse_position')").fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = conn.execute(
            "SELECT partition, next_offset FROM bluegreen_sync.reverse_position WHERE topic = %s",
            (settings.kafka.reverse_topic,),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def wait_reverse_drained(settings: Settings, timeout_s: float = 120) -> None:
    """Until blue's reverse position reaches the end of every partition of the topic."""
    kafka = settings.kafka.model_copy(update={"topic": settings.kafka.reverse_topic})
    deadline = time.monotonic() + timeout_s
    while True:
        ends = topic_ends(kafka, "test-watermarks")
        held = blue_positions(settings)
        behind = {p: (held.get(p, 0), end) for p, end in ends.items() if held.get(p, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"blue did not catch up: {behind}")
        time.sleep(0.1)


@contextmanager
def running_reverse(settings: Settings) -> Iterator[ReverseApplyService]:
    service = ReverseApplyService(settings, CATALOG, Metrics())
    thread = ServiceThread(service, "reverse-apply")
    try:
        yield service
    finally:
        thread.stop()
    thread.check()


def blue_rows(settings: Settings, sku: str) -> dict[str, dict[str, Any]]:
    with db.connect(settings.blue_dsn) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        rows = cursor.execute(
            "SELECT * FROM public.legacy_product WHERE sku = %s", (sku,)
        ).fetchall()
    return {row["channel"]: row for row in rows}
