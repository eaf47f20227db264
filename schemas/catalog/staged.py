"""The catalog's staged row: one per listing operation, declared once.

The declaration (``STAGE``) is the single description of the 17 columns: the
consumer's staging temp table, its binary COPY and the validation a row passes
before the batch are generated from it (``schemas.stage``). The constraints mirror
green's columns (lengths, numeric(12,2), non-negative stock, known channels and
currencies, aware timestamps), so a row green would refuse is rejected before the
batch with the column named. Column order: the listing key, the tombstone flag, the
payload (NULL in a tombstone), the version and the Kafka partition; ``stage_row``
relies on it and checks it at import.
"""

from __future__ import annotations

import json
from operator import attrgetter
from typing import Any

from schemas.catalog.transform import CHANNEL_CURRENCY, PRIMARY_ORDER, ListingOp, ListingUpsert
from schemas.stage import StageColumn, StageTable

STAGE = StageTable(
    name="stage_listing",
    noun="listing",
    key=("sku", "channel"),
    deleted="deleted",
    columns=(
        StageColumn("sku", "varchar(32)", min_length=1),
        StageColumn("channel", "varchar(2)", choices=PRIMARY_ORDER),
        StageColumn("deleted", "boolean"),
        StageColumn("blue_id", "bigint", payload=True),
        StageColumn("product_type", "varchar(80)", payload=True, min_length=1),
        StageColumn("name", "varchar(255)", payload=True, min_length=1),
        StageColumn("description", "text", payload=True, nullable=True),
        StageColumn("attributes", "jsonb", payload=True, min_length=2),  # a JSON object's text
        StageColumn("price", "numeric(12, 2)", payload=True, ge=0),
        StageColumn(
            "currency", "varchar(3)", payload=True, choices=tuple(CHANNEL_CURRENCY.values())
        ),
        StageColumn("stock", "integer", payload=True, ge=0),
        StageColumn("published", "boolean", payload=True),
        StageColumn("created_at", "timestamptz", payload=True),
        StageColumn("updated_at", "timestamptz", payload=True),
        StageColumn("src_lsn", "bigint", ge=0),
        StageColumn("src_seq", "integer", ge=0),
        StageColumn("kafka_partition", "integer", ge=0),
    ),
)
if STAGE.names != (
    *STAGE.key,
    STAGE.deleted,
    *STAGE.payload,
    "src_lsn",
    "src_seq",
    "kafka_partition",
):
    raise AssertionError("stage_row builds rows as key, deleted, payload, version, partition")

# The payload is read off a ListingUpsert by name (its fields carry the same names), in
# two runs around the attributes, which travel as JSON text (jsonb).
_ATTRIBUTES = STAGE.payload.index("attributes")
_payload_before = attrgetter(*STAGE.payload[:_ATTRIBUTES])
_payload_after = attrgetter(*STAGE.payload[_ATTRIBUTES + 1 :])
_TOMBSTONE = (None,) * len(STAGE.payload)

# Built once: json.dumps with options makes a new encoder on every call.
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def stage_row(op: ListingOp, partition: int) -> tuple[Any, ...]:
    """One staged row; the attributes travel as JSON text (jsonb)."""
    version = op.version
    if isinstance(op, ListingUpsert):
        return (
            op.sku,
            op.channel,
            False,
            *_payload_before(op),
            _to_json(op.attributes),
            *_payload_after(op),
            version.lsn,
            version.seq,
            partition,
        )
    return (op.sku, op.channel, True, *_TOMBSTONE, version.lsn, version.seq, partition)
