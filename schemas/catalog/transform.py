"""The transform from blue's model to green's: pure, no Kafka, no database.

Blue keeps one row per SKU per channel; green keeps one product per SKU and one
listing per channel. A blue change becomes listing operations: an upsert carries
the listing (price, currency, stock, published) and that channel's copy of the
shared product fields, already unified; a delete removes the listing. Green
derives each product from the live listings of its SKU (``derive_product``):

* Shared fields (type, name, description, attributes) come from the primary
  channel among the live listings, in the order US, GB, EU. When the primary
  channel's listing goes, the next one's copy takes over; when the last listing
  goes, the product goes.
* Product types lose their channel suffix: "Sneaker US" -> "Sneaker".
* Attributes are unified: sizes in the EU system under ``size_eu`` (US + 33,
  UK + 34 for numeric shoe sizes; letter sizes are kept), weights in grams under
  ``weight_g`` (pounds x 453.59237, rounded), "colour" -> ``color``. Other keys
  pass through unchanged.
* A row that cannot be mapped raises ``TransformError`` with the reason; the
  consumer sends it to the dead-letter topic.

Replace this module (and ``green.py``) to migrate another domain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bluegreen.core.errors import TransformError
from schemas.envelope import Op, Version

CHANNEL_CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}
PRIMARY_ORDER = ("US", "GB", "EU")  # which channel's copy of the shared fields wins
CHANNEL_RANK = {channel: rank for rank, channel in enumerate(PRIMARY_ORDER, start=1)}
GRAMS_PER_POUND = Decimal("453.59237")
SIZE_OFFSET_TO_EU = {"size_us": Decimal(33), "size_uk": Decimal(34), "size_eu": Decimal(0)}
OWN_SIZE_KEY = {"US": "size_us", "GB": "size_uk", "EU": "size_eu"}
LETTER_SIZES = frozenset({"XXS", "XS", "S", "M", "L", "XL", "XXL", "XXXL", "ONE SIZE"})
MAX_PRICE = Decimal("9999999999.99")  # numeric(12, 2)


@dataclass(frozen=True, slots=True)
class ListingUpsert:
    """A listing as of `version`, with its channel's copy of the product fields."""

    sku: str
    channel: str
    version: Version
    blue_id: int
    product_type: str
    name: str
    description: str | None
    attributes: dict[str, Any]
    price: Decimal
    currency: str
    stock: int
    published: bool
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.sku, self.channel)


@dataclass(frozen=True, slots=True)
class ListingDelete:
    sku: str
    channel: str
    version: Version

    @property
    def key(self) -> tuple[str, str]:
        return (self.sku, self.channel)


ListingOp = ListingUpsert | ListingDelete


@dataclass(frozen=True, slots=True)
class Product:
    """A green product as derived from the live listings of its SKU."""

    sku: str
    product_type: str
    name: str
    description: str | None
    attributes: dict[str, Any]
    primary_channel: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Listing:
    sku: str
    channel: str
    price: Decimal
    currency: str
    stock: int
    published: bool
    created_at: datetime
    updated_at: datetime


def transform(event: Mapping[str, Any]) -> list[ListingOp]:
    """The listing operations one decoded change event implies (none for messages)."""
    op = event["op"]
    source = event["source"]
    version = Version(source["lsn"], source["seq"])
    if op in (Op.READ, Op.CREATE):
        return [listing_upsert(_image(event, "after"), version)]
    if op == Op.UPDATE:
        after = _image(event, "after")
        before = event.get("before")
        if before is not None and _key(before) != _key(after):
            # The row moved to another SKU or channel: the old listing goes.
            return [ListingDelete(*_key(before), version), listing_upsert(after, version)]
        return [listing_upsert(after, version)]
    if op == Op.DELETE:
        image = event.get("before") or event.get("key")  # key: a repair found no blue row
        if image is None:
            raise TransformError("a 'd' event with neither a before image nor a key")
        return [ListingDelete(*_key(image), version)]
    if op in (Op.MESSAGE, Op.TRUNCATE):
        return []
    raise TransformError(f"unknown operation {op!r}")


def _image(event: Mapping[str, Any], side: str) -> Mapping[str, Any]:
    image: Mapping[str, Any] | None = event.get(side)
    if image is None:
        raise TransformError(f"a {event['op']!r} event without its {side!r} image")
    return image


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["sku"], row["channel"])


def listing_upsert(row: Mapping[str, Any], version: Version) -> ListingUpsert:
    """Map one blue row; raise TransformError naming what cannot be mapped."""
    sku = str(row["sku"]).strip()
    channel = row["channel"]
    where = f"blue row id={row['id']} sku={sku!r} channel={channel!r}"
    if channel not in CHANNEL_CURRENCY:
        raise TransformError(f"{where}: unknown channel {channel!r} (expected US, GB or EU)")
    if not sku:
        raise TransformError(f"{where}: empty SKU")
    if row["currency"] != CHANNEL_CURRENCY[channel]:
        raise TransformError(
            f"{where}: currency {row['currency']!r} is not channel {channel}'s "
            f"{CHANNEL_CURRENCY[channel]}"
        )
    price = row["price"]
    if not isinstance(price, Decimal) or not (Decimal(0) <= price <= MAX_PRICE):
        raise TransformError(f"{where}: price {price!r} is not a non-negative numeric(12,2)")
    stock = row["stock"]
    if stock is not None and stock < 0:
        raise TransformError(f"{where}: negative stock {stock}")
    name = row["name"].strip()
    if not name:
        raise TransformError(f"{where}: empty name")
    return ListingUpsert(
        sku=sku,
        channel=channel,
        version=version,
        blue_id=row["id"],
        product_type=unify_product_type(row["product_type"], channel, where),
        name=name,
        description=row["description"],
        attributes=unify_attributes(row["attributes"], channel, where),
        price=price,
        currency=row["currency"],
        stock=0 if stock is None else stock,  # untracked stock is sold as none
        published=row["published"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def unify_product_type(product_type: str, channel: str, where: str) -> str:
    base, _, suffix = product_type.strip().rpartition(" ")
    if suffix != channel or not base.strip():
        raise TransformError(
            f"{where}: product type {product_type!r} does not end with its channel {channel!r}"
        )
    return base.strip()


def unify_attributes(raw: str | Mapping[str, Any], channel: str, where: str) -> dict[str, Any]:
    try:
        attributes = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError as exc:
        raise TransformError(f"{where}: attributes are not JSON: {exc}") from exc
    if not isinstance(attributes, dict):
        raise TransformError(f"{where}: attributes are not a JSON object")
    unified: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in SIZE_OFFSET_TO_EU:
            if key != OWN_SIZE_KEY[channel]:
                raise TransformError(f"{where}: attribute {key!r} does not belong to {channel}")
            unified["size_eu"] = _size_to_eu(key, value, where)
        elif key == "weight_lb":
            unified["weight_g"] = _pounds_to_grams(value, where)
        elif key == "weight_g":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TransformError(f"{where}: weight_g {value!r} is not a non-negative integer")
            unified["weight_g"] = value
        elif key in ("colour", "color"):
            unified["color"] = value
        else:
            unified[key] = value
    return unified


def _size_to_eu(key: str, value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip().upper() in LETTER_SIZES:
        return value.strip().upper()
    try:
        size = Decimal(str(value))
    except InvalidOperation as exc:
        raise TransformError(
            f"{where}: {key} {value!r} is neither numeric nor a letter size"
        ) from exc
    if not size.is_finite() or size <= 0 or size % Decimal("0.5") != 0:
        raise TransformError(f"{where}: {key} {value!r} is not a whole or half size")
    eu = size + SIZE_OFFSET_TO_EU[key]
    return str(eu.quantize(Decimal(1)) if eu == eu.to_integral() else eu.quantize(Decimal("0.1")))


def _pounds_to_grams(value: Any, where: str) -> int:
    try:
        pounds = Decimal(str(value))
    except InvalidOperation as exc:
        raise TransformError(f"{where}: weight_lb {value!r} is not a number") from exc
    if isinstance(value, bool) or not pounds.is_finite() or pounds < 0:
        raise TransformError(f"{where}: weight_lb {value!r} is not a non-negative number")
    return int((pounds * GRAMS_PER_POUND).quantize(Decimal(1)))


# -- derivation of the public green rows --------------------------------------------------------


def derive_product(listings: Iterable[ListingUpsert]) -> Product | None:
    """The product of one SKU from its live listings (None when there are none)."""
    live = sorted(listings, key=lambda item: CHANNEL_RANK[item.channel])
    if not live:
        return None
    primary = live[0]
    return Product(
        sku=primary.sku,
        product_type=primary.product_type,
        name=primary.name,
        description=primary.description,
        attributes=primary.attributes,
        primary_channel=primary.channel,
        created_at=min(item.created_at for item in live),
        updated_at=max(item.updated_at for item in live),
    )


def listing_of(item: ListingUpsert) -> Listing:
    return Listing(
        sku=item.sku,
        channel=item.channel,
        price=item.price,
        currency=item.currency,
        stock=item.stock,
        published=item.published,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


@dataclass(frozen=True)
class GreenState:
    products: dict[str, Product]
    listings: dict[tuple[str, str], Listing]


def green_state(live: Iterable[ListingUpsert]) -> GreenState:
    """Public green rows from the live listing records (any order)."""
    by_sku: dict[str, list[ListingUpsert]] = {}
    listings: dict[tuple[str, str], Listing] = {}
    for item in live:
        by_sku.setdefault(item.sku, []).append(item)
        listings[item.key] = listing_of(item)
    products = {}
    for sku, items in by_sku.items():
        product = derive_product(items)
        if product is not None:
            products[sku] = product
    return GreenState(products, listings)


def transform_state(blue_rows: Iterable[Mapping[str, Any]], version: Version) -> GreenState:
    """transform(blue): what green must hold for this set of blue rows."""
    return green_state(listing_upsert(row, version) for row in blue_rows)
