"""Blue's legacy_product as the engine reads it: the one declaration of the blue row.

The snapshot's COPY, the CDC decoder, the seed loader's COPY types and verification's
blue query all follow from it. The SQLAlchemy model (``blue.py``) and the published
Avro schema (``schemas/avro/v*/legacy_product.avsc``) cannot be generated from it
without changing what they are (DDL details, the .avsc's bytes); a unit test holds
both to it.
"""

from __future__ import annotations

from schemas.catalog.blue import SCHEMA, TABLE
from schemas.rowvalues import Column, Kind
from schemas.source import SourceSpec

SOURCE = SourceSpec(
    schema=SCHEMA,
    table=TABLE,
    primary_key="id",
    columns=(
        Column("id", Kind.LONG),
        Column("sku", Kind.STRING),
        Column("channel", Kind.STRING),
        Column("product_type", Kind.STRING),
        Column("name", Kind.STRING),
        Column("description", Kind.STRING, nullable=True),
        Column("attributes", Kind.JSON),
        Column("price", Kind.DECIMAL2),
        Column("currency", Kind.STRING),
        Column("stock", Kind.INT, nullable=True),
        Column("published", Kind.BOOLEAN),
        Column("created_at", Kind.TIMESTAMP),
        Column("updated_at", Kind.TIMESTAMP),
    ),
    aggregate_key="sku",
    natural_key=("sku", "channel"),
)
