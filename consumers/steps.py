"""The per-message steps before the batch: decode, transform, validate.

Each step raises its own error with the cause attached; the service turns any of
them into a dead letter naming the step. Control events (fences, heartbeats,
truncates) pass the transform untouched: they are positions, not rows.
"""

from __future__ import annotations

from typing import Any

from bluegreen.core.errors import SerializationError
from schemas.codec import Codec
from schemas.domain import Domain


def decode(codec: Codec, value: bytes | None) -> dict[str, Any]:
    """Step 1: bytes -> envelope (SerializationError on anything that is not one)."""
    if value is None:
        raise SerializationError("a message without a value is not a change envelope")
    return codec.decode(value)


def transform_rows(domain: Domain, event: dict[str, Any], partition: int) -> list[tuple[Any, ...]]:
    """Step 2: the domain's pure transform, staged as the rows green will receive."""
    stage_row = domain.stage_row
    return [stage_row(op, partition) for op in domain.transform(event)]


def validate(domain: Domain, rows: list[tuple[Any, ...]]) -> None:
    """Step 3: every row must fit green's columns (InvalidRowError names the column)."""
    check = domain.stage.validate
    for row in rows:
        check(row)
