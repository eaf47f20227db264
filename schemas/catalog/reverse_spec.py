"""What the reverse applier needs of the catalog: green's state of a set of SKUs in one
query, grouped into ``GreenAggregate``s for the inverse transform, and blue's columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from schemas.catalog.blue import COLUMNS, SCHEMA, TABLE
from schemas.catalog.inverse import WRITTEN, GreenAggregate, inverse
from schemas.catalog.transform import Listing, Product
from schemas.domain import ReverseSpec

# One row per listing (one with NULL listing columns for a product without any; none
# for a SKU green does not hold). Listings need their product: the foreign key holds
# at every commit, and the join reads both in the query's one snapshot.
GREEN_QUERY = sql.SQL("""
SELECT k.sku, p.sku, p.product_type, p.name, p.description, p.attributes, p.primary_channel,
       p.created_at, p.updated_at,
       l.channel, l.price, l.currency, l.stock, l.published, l.created_at, l.updated_at
FROM unnest(%(keys)s::text[]) AS k(sku)
JOIN catalog.product p ON p.sku = k.sku
LEFT JOIN catalog.channel_listing l ON l.sku = p.sku
""")


def aggregates(keys: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """Each asked SKU's green state (a product green does not hold: no product)."""
    products: dict[str, Product] = {}
    listings: dict[str, dict[str, Listing]] = {key: {} for key in keys}
    for key, *product_row, channel, price, currency, stock, published, created, updated in rows:
        products[key] = Product(*product_row)
        if channel is not None:
            listings[key][channel] = Listing(
                key, channel, price, currency, stock, published, created, updated
            )
    return {key: GreenAggregate(key, products.get(key), listings[key]) for key in keys}


REVERSE = ReverseSpec(
    tables=(("catalog", "product"), ("catalog", "channel_listing")),
    key_column="sku",
    green_query=GREEN_QUERY,
    aggregates=aggregates,
    inverse=inverse,
    blue_table=(SCHEMA, TABLE),
    blue_key="sku",
    natural_key=("sku", "channel"),
    read_columns=COLUMNS,
    write_columns=WRITTEN,
)
