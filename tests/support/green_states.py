"""Hypothesis strategies: valid green states of one SKU, and blue rows to start from.

A valid green state is one the forward transform can produce (what green's constraints
plus the transform's rules allow): types and names stripped and non-empty, attributes
in green's unified form (``size_eu`` a letter or a canonical EU size the primary
channel's system can express, ``weight_g`` a non-negative integer, ``color`` not
``colour``, no per-channel key), each listing in its channel's currency, and the
product derived as the transform derives it: the first listed channel of US, GB, EU
is primary, created_at/updated_at the listings' earliest and latest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas.catalog.inverse import GreenAggregate
from schemas.catalog.transform import (
    CHANNEL_CURRENCY,
    CHANNEL_RANK,
    LETTER_SIZES,
    MAX_PRICE,
    Listing,
    Product,
)

CHANNELS = ("US", "GB", "EU")
RESERVED = {"size_us", "size_uk", "size_eu", "weight_lb", "weight_g", "colour", "color"}
_T0 = datetime(2020, 1, 1, tzinfo=UTC)
_LOWEST_EU = {"US": Decimal(33), "GB": Decimal(34), "EU": Decimal(0)}

words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20)
stripped = words.map(str.strip).filter(bool)
timestamps = st.integers(0, 10**9).map(lambda s: _T0 + timedelta(seconds=s, microseconds=7))
json_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | words
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)
other_keys = words.filter(lambda k: k not in RESERVED)
prices = st.decimals(0, MAX_PRICE, places=2)


def _canonical_eu(size: Decimal) -> str:
    return str(
        size.quantize(Decimal(1)) if size == size.to_integral() else size.quantize(Decimal("0.1"))
    )


@st.composite
def size_eu(draw: st.DrawFn, primary: str) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(sorted(LETTER_SIZES)))
    halves = draw(st.integers(1, 120))
    return _canonical_eu(_LOWEST_EU[primary] + Decimal(halves) / 2)


@st.composite
def green_attributes(draw: st.DrawFn, primary: str) -> dict[str, Any]:
    attributes: dict[str, Any] = draw(st.dictionaries(other_keys, json_values, max_size=3))
    if draw(st.booleans()):
        attributes["size_eu"] = draw(size_eu(primary))
    if draw(st.booleans()):
        attributes["weight_g"] = draw(st.integers(0, 5000) | st.integers(0, 10**20))
    if draw(st.booleans()):
        attributes["color"] = draw(json_scalars)
    return attributes


@st.composite
def listing(draw: st.DrawFn, sku: str, channel: str) -> Listing:
    created = draw(timestamps)
    return Listing(
        sku=sku,
        channel=channel,
        price=draw(prices),
        currency=CHANNEL_CURRENCY[channel],
        stock=draw(st.integers(0, 10**6)),
        published=draw(st.booleans()),
        created_at=created,
        updated_at=created + timedelta(seconds=draw(st.integers(0, 10**6))),
    )


@st.composite
def green_aggregate(draw: st.DrawFn, sku: str = "BG-1") -> GreenAggregate:
    channels = draw(st.sets(st.sampled_from(CHANNELS), min_size=1))
    listings = {ch: draw(listing(sku, ch)) for ch in channels}
    primary = min(channels, key=CHANNEL_RANK.__getitem__)
    product = Product(
        sku=sku,
        product_type=draw(stripped.filter(lambda t: len(t) <= 77)),
        name=draw(stripped),
        description=draw(st.none() | words),
        attributes=draw(green_attributes(primary)),
        primary_channel=primary,
        created_at=min(item.created_at for item in listings.values()),
        updated_at=max(item.updated_at for item in listings.values()),
    )
    return GreenAggregate(sku, product, listings)


@st.composite
def blue_attributes(draw: st.DrawFn, channel: str) -> dict[str, Any]:
    """A legacy row's attributes in any of the conventions blue has (or a wrong key)."""
    attributes: dict[str, Any] = draw(st.dictionaries(other_keys, json_values, max_size=2))
    size_key = draw(st.sampled_from(["size_us", "size_uk", "size_eu"]))
    if draw(st.booleans()):
        attributes[size_key] = draw(
            st.sampled_from(["M", " xl", "ONE SIZE"])
            | st.integers(1, 40).map(lambda h: h / 2)
            | st.integers(1, 20).map(str)
        )
    if draw(st.booleans()):
        if draw(st.booleans()):
            attributes["weight_lb"] = draw(st.integers(0, 900).map(lambda c: c / 100))
        else:
            attributes["weight_g"] = draw(st.integers(0, 5000))
    if draw(st.booleans()):
        attributes[draw(st.sampled_from(["color", "colour"]))] = draw(json_scalars)
    return attributes


@st.composite
def blue_rows(draw: st.DrawFn, sku: str = "BG-1") -> list[dict[str, Any]]:
    """Blue's rows of one SKU: any channels, most mappable, some the transform rejects."""
    rows = []
    for number, channel in enumerate(sorted(draw(st.sets(st.sampled_from(CHANNELS)))), 1):
        created = draw(timestamps)
        good = draw(st.integers(0, 9)) > 0
        rows.append(
            {
                "id": number,
                "sku": sku,
                "channel": channel,
                "product_type": f"{draw(stripped)} {channel if good else 'XX'}",
                "name": draw(stripped) + draw(st.sampled_from(["", " "])),
                "description": draw(st.none() | words),
                "attributes": draw(blue_attributes(channel)),
                "price": draw(prices),
                "currency": CHANNEL_CURRENCY[channel],
                "stock": draw(st.none() | st.integers(0, 1000)),
                "published": draw(st.booleans()),
                "created_at": created,
                "updated_at": created + timedelta(seconds=draw(st.integers(0, 10**6))),
            }
        )
    return rows
