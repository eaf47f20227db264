"""What verification compares for the catalog: green's products and listings against
the transform of blue's rows, one SKU at a time.

The compared fields are those of the transform's ``Product`` and ``Listing`` (the
green rows it derives), so the queries, the expected rows and the reported field
names come from one declaration. Attributes are compared as canonical JSON in jsonb's own key order.
"""

from __future__ import annotations

import json
from dataclasses import fields
from operator import attrgetter
from typing import Any

from bluegreen.core.errors import TransformError
from schemas.catalog.blue import CHANNELS
from schemas.catalog.transform import Listing, Product, derive_product, listing_of, listing_upsert
from schemas.domain import Expected, GreenTable, VerifySpec
from schemas.envelope import Version

_PRODUCT_FIELDS = tuple(f.name for f in fields(Product))
_LISTING_FIELDS = tuple(f.name for f in fields(Listing))
_ATTRIBUTES = _PRODUCT_FIELDS.index("attributes")
# A row's compared values in field order, in one call (a tuple, as green's rows come).
_product_values = attrgetter(*_PRODUCT_FIELDS)
_listing_values = attrgetter(*_LISTING_FIELDS)

# Attributes compared as canonical JSON, written exactly as PostgreSQL prints a jsonb
# (keys by length, then bytes; ", " and ": "), so that green's digest can be computed in
# SQL from ``attributes::text`` (``cutover.canonical``). One encoder, not one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def _jsonb_key(key: Any) -> tuple[int, bytes]:
    encoded = str(key).encode()
    return (len(encoded), encoded)


def _jsonb_order(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonb_order(value[k]) for k in sorted(value, key=_jsonb_key)}
    if isinstance(value, list):
        return [_jsonb_order(item) for item in value]
    return value


def _canonical_json(value: Any) -> str:
    return _encode(_jsonb_order(value))


def _product_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:_ATTRIBUTES], _canonical_json(row[_ATTRIBUTES]), *row[_ATTRIBUTES + 1 :])


PRODUCTS = GreenTable("product", "catalog", "product", _PRODUCT_FIELDS, normalize=_product_row)
LISTINGS = GreenTable("channel_listing", "catalog", "channel_listing", _LISTING_FIELDS, part=1)


def expected(rows: list[dict[str, Any]], version: Version) -> Expected:
    """What green should hold for one SKU's blue rows (as read at `version`)."""
    upserts = []
    unmappable = []
    for row in rows:
        try:
            upserts.append(listing_upsert(row, version))
        except TransformError as exc:
            unmappable.append(str(exc))
    product = derive_product(upserts)
    products: dict[Any, tuple[Any, ...]] = {}
    if product is not None:
        products[None] = _product_row(_product_values(product))
    listings = {u.channel: _listing_values(listing_of(u)) for u in upserts}
    return Expected({PRODUCTS.name: products, LISTINGS.name: listings}, unmappable)


def repair_keys(sku: str) -> list[tuple[Any, ...]]:
    """Every channel of the SKU: a re-snapshot rebuilds the whole product."""
    return [(sku, channel) for channel in CHANNELS]


VERIFY = VerifySpec(
    tables=(PRODUCTS, LISTINGS),
    expected=expected,
    records=("sync", "listing_record"),
    repair_keys=repair_keys,
)
