"""The per-message steps before the batch: decode, transform, validate.

Each step raises its own error with the cause attached; the service turns any of
them into a dead letter naming the step. Control events (fences, heartbeats,
truncates) pass the transform untouched: they are positions, not rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bluegreen.errors import SerializationError
from schemas.catalog.green_apply import stage_row
from schemas.catalog.transform import transform
from schemas.catalog.validation import validate_row
from schemas.codec import Codec
from schemas.envelope import Op, Version

FENCE_PREFIX = "bluegreen.fence"
HEARTBEAT_PREFIX = "bluegreen.heartbeat"


@dataclass(frozen=True, slots=True)
class Fence:
    fence_id: str
    lsn: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Truncate:
    version: Version


Control = Fence | Heartbeat | Truncate


def decode(codec: Codec, value: bytes | None) -> dict[str, Any]:
    """Step 1: bytes -> envelope (SerializationError on anything that is not one)."""
    if value is None:
        raise SerializationError("a message without a value is not a change envelope")
    return codec.decode(value)


def control_of(event: dict[str, Any]) -> Control | None:
    """Fences, heartbeats and truncates; None for row changes and foreign messages."""
    op = event["op"]
    if op == Op.TRUNCATE:
        source = event["source"]
        return Truncate(Version(source["lsn"], source["seq"]))
    if op == Op.MESSAGE and event["message"] is not None:
        message = event["message"]
        if message["prefix"] == FENCE_PREFIX:
            return Fence(message["content"], event["source"]["lsn"])
        if message["prefix"] == HEARTBEAT_PREFIX:
            return Heartbeat(event["source"]["ts_ms"])
    return None


def transform_rows(event: dict[str, Any], partition: int) -> list[tuple[Any, ...]]:
    """Step 2: the domain's pure transform, staged as the rows green will receive."""
    return [stage_row(op, partition) for op in transform(event)]


def validate(rows: list[tuple[Any, ...]]) -> None:
    """Step 3: every row must fit green's columns (InvalidRowError names the column)."""
    for row in rows:
        validate_row(row)
