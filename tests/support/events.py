"""Builders of blue rows and change events for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.catalog.blue import COLUMNS
from schemas.envelope import CONNECTOR_CDC, CONNECTOR_SNAPSHOT, Op, SourceTable, Version, row_event

TABLE = SourceTable("blue", "public", "legacy_product")
DEFAULT_VERSION = Version(100, 1)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def blue_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1,
        "sku": "BG-0000001",
        "channel": "US",
        "product_type": "Sneaker US",
        "name": "Trail Black Sneaker",
        "description": "Grippy.",
        "attributes": '{"color": "Black", "size_us": 9.5, "weight_lb": 1.5}',
        "price": Decimal("99.99"),
        "currency": "USD",
        "stock": 12,
        "published": True,
        "created_at": T0,
        "updated_at": T0,
    }
    row.update(overrides)
    assert set(row) == set(COLUMNS)
    return row


def event(
    op: Op,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    version: Version = DEFAULT_VERSION,
    txid: int | None = 7,
) -> dict[str, Any]:
    return row_event(
        op,
        TABLE,
        before=before,
        after=after,
        version=version,
        txid=txid,
        ts_ms=1_714_564_800_000,
        connector=CONNECTOR_SNAPSHOT if op == Op.READ else CONNECTOR_CDC,
    )
