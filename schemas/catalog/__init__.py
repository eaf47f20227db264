"""The demo domain: a legacy catalog with one product per channel (blue) and a new
catalog with one product per SKU (green). Replace this package to migrate another
domain: the engine reads only SOURCE, the transform and the green apply spec."""

from schemas.rowvalues import Column, Kind
from schemas.source import SourceSpec

SOURCE = SourceSpec(
    schema="public",
    table="legacy_product",
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
