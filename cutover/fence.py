"""The fence: proof that green applied everything blue committed up to a point.

Offset lag cannot see WAL that was never produced. A fence is a logical message
written into blue's WAL; CDC forwards it to every partition after everything
committed before it, and the consumer records it with the partition's position in
green's transaction. Once every partition shows it, green holds every change
committed on blue before the fence.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.kafka import make_admin
from schemas.control import FENCE_PREFIX
from schemas.lsn import parse_lsn


@dataclass(frozen=True)
class Fence:
    fence_id: str
    lsn: int


@dataclass(frozen=True)
class Applier:
    """Where a direction's applier records its positions: the forward one in green's
    ``sync.apply_position``, the reverse one in blue's ``bluegreen_sync.reverse_position``
    (same columns)."""

    dsn: SecretStr
    schema: str
    table: str
    topic: str


def forward(settings: Settings) -> Applier:
    return Applier(settings.green_dsn, "sync", "apply_position", settings.kafka.topic)


def reverse(settings: Settings) -> Applier:
    return Applier(
        settings.blue_dsn, "bluegreen_sync", "reverse_position", settings.kafka.reverse_topic
    )


@dataclass(frozen=True)
class FenceProgress:
    fence: Fence
    partitions: int
    applied: list[int]
    seconds: float

    @property
    def behind(self) -> list[int]:
        return [p for p in range(self.partitions) if p not in self.applied]

    @property
    def done(self) -> bool:
        return not self.behind


def write(settings: Settings, dsn: SecretStr | None = None) -> Fence:
    """Write a fence into blue's WAL (or `dsn`'s: green's for the reverse direction), a
    transactional logical message, and return it."""
    fence_id = f"fence-{uuid.uuid4().hex[:12]}"
    with db.connect(dsn or settings.blue_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_logical_emit_message(true, %s, %s)::text", (FENCE_PREFIX, fence_id)
        ).fetchone()
    assert row is not None
    return Fence(fence_id, parse_lsn(row[0]))


def partition_count(settings: Settings, topic: str | None = None) -> int:
    topic = topic or settings.kafka.topic
    admin = make_admin(settings.kafka)
    metadata = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return settings.kafka.partitions
    return len(metadata.partitions)


def progress(
    settings: Settings,
    fence: Fence,
    partitions: int,
    started: float,
    applier: Applier | None = None,
) -> FenceProgress:
    where = applier or forward(settings)
    with db.connect(where.dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT to_regclass(%s)", (f'"{where.schema}"."{where.table}"',)
        ).fetchone()
        rows = (
            conn.execute(
                sql.SQL("SELECT partition FROM {} WHERE topic = %s AND fence_lsn >= %s").format(
                    sql.Identifier(where.schema, where.table)
                ),
                (where.topic, fence.lsn),
            ).fetchall()
            if exists and exists[0]
            else []
        )
    return FenceProgress(fence, partitions, sorted(r[0] for r in rows), time.monotonic() - started)


def wait_applied(
    settings: Settings,
    fence: Fence,
    timeout_s: float,
    applier: Applier | None = None,
    partitions: int | None = None,
) -> FenceProgress:
    """Wait until the applier (green's by default) applied the fence on every partition
    (of `partitions`, else asked of Kafka), or the timeout passes."""
    where = applier or forward(settings)
    partitions = partitions or partition_count(settings, where.topic)
    started = time.monotonic()
    while True:
        current = progress(settings, fence, partitions, started, where)
        if current.done or current.seconds >= timeout_s:
            return current
        time.sleep(0.02)


def waiter(settings: Settings, timeout_s: float) -> FenceWaiter:
    return FenceWaiter(settings, timeout_s)


class FenceWaiter:
    """For verify: after a snapshot at some LSN, wait until green holds everything before it."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.last: FenceProgress | None = None

    def __call__(self, snapshot_lsn: int) -> None:
        fence = write(self.settings)  # written after the snapshot: its LSN is past it
        self.last = wait_applied(self.settings, fence, self.timeout_s)
        if not self.last.done:
            raise FenceTimeoutError(self.last)


class FenceTimeoutError(BluegreenError):
    def __init__(self, progress: FenceProgress) -> None:
        self.progress = progress
        super().__init__(
            f"fence {progress.fence.fence_id} applied on {len(progress.applied)} of "
            f"{progress.partitions} partitions after {progress.seconds:.0f}s (behind: "
            f"{progress.behind}); are `bluegreen cdc` and `bluegreen consume` running?"
        )
