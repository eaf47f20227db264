"""The inverse transform, green -> blue: pure, no Kafka, no database.

Once writes are on green, each changed SKU's green state (its product and listings)
goes back into blue's legacy rows. ``inverse(green, blue_rows)`` returns the rows
blue should hold for one SKU, given the rows it holds now (one per channel):

* A green listing gives its channel's row: price, currency, stock, published and the
  listing's timestamps; a channel green does not list has no row (deleted). A blue
  row the transform rejects (green never held it) is left as it is unless green lists
  its channel. A SKU without product or without listings has no rows.
* The primary channel's row (the first listed of US, GB, EU, the row the transform
  derives the product from) gets the product's fields: type with the channel suffix,
  name, description, attributes in the channel's own system.
* The other channels keep their own copy of name and description. Type and attributes
  are merged: a field green changed (compared with what blue's rows give today) is
  written to every channel in that channel's form; a field green did not change keeps
  each channel's own value (EU's colour "Schwarz" stays when only the weight changes).
  A new channel row starts from the product's fields.
* Channel forms: type + " US"; ``size_eu`` back to ``size_us`` (-33), ``size_uk``
  (-34) or ``size_eu`` (letter sizes as they are); ``weight_g`` to ``weight_lb``
  where the row used pounds (US when new), with 2 or 3 decimals, whichever maps back
  to the same grams (grams when no float does); ``color`` to ``colour`` where the row
  used it (GB and EU when new). A value a non-primary channel cannot express (a size
  below its system's range) is left out of that row.
* A value blue already holds is kept whenever it maps to green's (stock NULL for 0,
  a size written as "7" or 7, a name with trailing blanks), so inverse(transform(b), b)
  == b: an unchanged SKU writes nothing.

What the forward transform loses, so no inverse can give back: the product's
``primary_channel``, ``created_at`` and ``updated_at`` (derived: the first listed
channel, the listings' earliest creation and latest update; a green state where they
are anything else cannot round-trip, and blue keeps the listings' timestamps); NULL
vs 0 stock (kept from blue, 0 for a new row); blue's ``id``; the non-primary channels'
attributes and copies (not in green at all: kept). A green state blue cannot hold at
all (a type of 78+ characters, a ``size_eu`` of 30 on a US product, a key the
transform never produces such as ``colour``) raises ``TransformError`` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from bluegreen.core.errors import TransformError
from schemas.catalog.transform import (
    CHANNEL_RANK,
    GRAMS_PER_POUND,
    LETTER_SIZES,
    OWN_SIZE_KEY,
    SIZE_OFFSET_TO_EU,
    Listing,
    ListingUpsert,
    Product,
    derive_product,
    listing_upsert,
    unify_attributes,
    unify_product_type,
)
from schemas.envelope import Version

# The blue columns the inverse writes (all but the identity ``id``).
WRITTEN = (
    "sku",
    "channel",
    "product_type",
    "name",
    "description",
    "attributes",
    "price",
    "currency",
    "stock",
    "published",
    "created_at",
    "updated_at",
)
_NO_VERSION = Version(0, 0)
_TYPE_LENGTH = 80  # blue's product_type varchar(80)
_POUNDS_CHANNELS = frozenset({"US"})  # a new row's weight unit, as the legacy shop used
_COLOUR_CHANNELS = frozenset({"GB", "EU"})  # and its spelling of color
_GREEN_KEY = {
    "size_us": "size_eu",
    "size_uk": "size_eu",
    "weight_lb": "weight_g",
    "colour": "color",
}
_MISSING = object()
_PRODUCT_FIELDS = ("product_type", "name", "description", "attributes")
_LISTING_FIELDS = tuple(f.name for f in fields(Listing) if f.name not in ("sku", "channel"))


@dataclass(frozen=True)
class GreenAggregate:
    """One SKU as green holds it: its product (None: none) and listings by channel."""

    sku: str
    product: Product | None
    listings: Mapping[str, Listing]


def inverse(green: GreenAggregate, blue_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows (``WRITTEN`` columns) blue should hold for one SKU; see the module doc."""
    blue_rows = [{**row, "attributes": _as_dict(row["attributes"])} for row in blue_rows]
    existing = {row["channel"]: row for row in blue_rows}
    mapped = _mapped(blue_rows)
    rejected = [dict(_written(row)) for ch, row in existing.items() if ch not in mapped]
    product = green.product
    if product is None or not green.listings:
        return rejected
    primary = min(green.listings, key=lambda ch: CHANNEL_RANK.get(ch, 99))
    base = derive_product(mapped.values())
    out = [row for row in rejected if row["channel"] not in green.listings]
    for channel in sorted(green.listings, key=lambda ch: CHANNEL_RANK.get(ch, 99)):
        listing = green.listings[channel]
        old = existing.get(channel) if channel in mapped else None
        if channel == primary or old is None:
            shared = _full(product, channel, old, strict=channel == primary)
        else:
            shared = _merged(product, base, channel, old)
        row = {"sku": green.sku, "channel": channel, **shared, **_listing(listing, old)}
        _check(row, product if channel == primary else None, listing)
        out.append(row)
    return out


def _mapped(blue_rows: Sequence[Mapping[str, Any]]) -> dict[str, ListingUpsert]:
    mapped = {}
    for row in blue_rows:
        try:
            mapped[row["channel"]] = listing_upsert({"id": None, **row}, _NO_VERSION)
        except TransformError:
            continue
    return mapped


def _as_dict(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def _written(row: Mapping[str, Any]) -> dict[str, Any]:
    return {column: row[column] for column in WRITTEN}


def _listing(listing: Listing, old: Mapping[str, Any] | None) -> dict[str, Any]:
    stock: int | None = listing.stock
    if old is not None and old["stock"] is None and listing.stock == 0:
        stock = None  # the legacy shop did not track it: still sold as none
    return {
        "price": listing.price,
        "currency": listing.currency,
        "stock": stock,
        "published": listing.published,
        "created_at": listing.created_at,
        "updated_at": listing.updated_at,
    }


def _full(
    product: Product, channel: str, old: Mapping[str, Any] | None, *, strict: bool
) -> dict[str, Any]:
    """Every shared field from the product, in the channel's form (kept where old maps)."""
    name = product.name
    if old is not None and old["name"].strip() == product.name:
        name = old["name"]
    return {
        "product_type": _type(product.product_type, channel, old),
        "name": name,
        "description": product.description,
        "attributes": _attributes(product.attributes, channel, old, strict=strict),
    }


def _merged(
    product: Product, base: Product | None, channel: str, old: Mapping[str, Any]
) -> dict[str, Any]:
    """A non-primary row: own copies kept; what green changed against `base` written."""
    product_type = old["product_type"]
    if base is None or product.product_type != base.product_type:
        product_type = _type(product.product_type, channel, old)
    base_attributes = base.attributes if base is not None else {}
    changed = {
        key
        for key in {*base_attributes, *product.attributes}
        if base_attributes.get(key, _MISSING) != product.attributes.get(key, _MISSING)
    }
    attributes = dict(old["attributes"])
    if changed:
        attributes = {k: v for k, v in attributes.items() if _GREEN_KEY.get(k, k) not in changed}
        for key in changed & set(product.attributes):
            pair = _blue_pair(key, product.attributes[key], channel, old["attributes"])
            if pair is not None:
                attributes[pair[0]] = pair[1]
    return {
        "product_type": product_type,
        "name": old["name"],
        "description": old["description"],
        "attributes": attributes,
    }


def _type(product_type: str, channel: str, old: Mapping[str, Any] | None) -> str:
    if old is not None and _maps(lambda: unify_product_type(old["product_type"], channel, "")) == (
        product_type
    ):
        return str(old["product_type"])
    return f"{product_type} {channel}"


def _attributes(
    green: Mapping[str, Any], channel: str, old: Mapping[str, Any] | None, *, strict: bool
) -> dict[str, Any]:
    old_attributes: Mapping[str, Any] = old["attributes"] if old is not None else {}
    if old is not None and _unified(old_attributes, channel) == green:
        return dict(old_attributes)
    out: dict[str, Any] = {}
    for key, value in green.items():
        pair = _blue_pair(key, value, channel, old_attributes)
        if pair is None:
            if strict:
                raise TransformError(
                    f"green attribute {key}={value!r} cannot be written to blue's {channel} row"
                )
            continue
        out[pair[0]] = pair[1]
    return out


def _blue_pair(
    key: str, value: Any, channel: str, old: Mapping[str, Any]
) -> tuple[str, Any] | None:
    """One green attribute in the channel's form, or None if the channel cannot hold it."""
    for blue_key, blue_value in _candidates(key, value, channel, old):
        if _unified({blue_key: blue_value}, channel) == {key: value}:
            return (blue_key, blue_value)
    return None


def _unified(attributes: Mapping[str, Any], channel: str) -> Any:
    return _maps(lambda: unify_attributes(attributes, channel, ""))


def _candidates(
    key: str, value: Any, channel: str, old: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """Blue (key, value) pairs that may map to green's, best first; the caller checks."""
    kept = [(k, v) for k, v in old.items() if _GREEN_KEY.get(k, k) == key]
    if key == "size_eu":
        own = OWN_SIZE_KEY[channel]
        return [*kept, (own, _size_from_eu(value, own))]
    if key == "weight_g":
        pounds = "weight_lb" in old or ("weight_g" not in old and channel in _POUNDS_CHANNELS)
        in_pounds = [("weight_lb", p) for p in _pounds(value)] if pounds else []
        return [*kept, *in_pounds, ("weight_g", value)]
    if key == "color":
        colour = "colour" in old or ("color" not in old and channel in _COLOUR_CHANNELS)
        return [*kept, ("colour" if colour else "color", value)]
    if key in _GREEN_KEY:
        return []  # the transform never produces these keys
    return [(key, value)]


def _size_from_eu(value: Any, own: str) -> Any:
    if isinstance(value, str) and value.strip().upper() in LETTER_SIZES:
        return value
    try:
        size = Decimal(str(value)) - SIZE_OFFSET_TO_EU[own]
    except InvalidOperation:
        return value
    return int(size) if size == size.to_integral_value() else float(size)


def _pounds(grams: Any) -> list[float]:
    if not isinstance(grams, int) or isinstance(grams, bool):
        return []
    pounds = Decimal(grams) / GRAMS_PER_POUND
    return [float(pounds.quantize(Decimal(1).scaleb(-places))) for places in (2, 3)]


def _maps(function: Any) -> Any:
    """What a forward mapping gives, or _MISSING if it rejects the value."""
    try:
        return function()
    except (TransformError, ValueError, TypeError, ArithmeticError):
        return _MISSING


def _check(row: dict[str, Any], product: Product | None, listing: Listing) -> None:
    """The transform must give back green's listing (and product, for the primary row)."""
    where = f"sku {row['sku']!r} channel {row['channel']}"
    try:
        mapped = listing_upsert({"id": None, **row}, _NO_VERSION)
    except TransformError as exc:
        raise TransformError(f"{where}: green's state cannot be written to blue: {exc}") from exc
    if len(row["product_type"]) > _TYPE_LENGTH:
        raise TransformError(f"{where}: product type {row['product_type']!r} is too long for blue")
    wanted = [(f, getattr(listing, f)) for f in _LISTING_FIELDS]
    if product is not None:
        wanted += [(f, getattr(product, f)) for f in _PRODUCT_FIELDS]
    for name, value in wanted:
        if getattr(mapped, name) != value:
            raise TransformError(f"{where}: green's {name} {value!r} cannot be written to blue")
