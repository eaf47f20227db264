"""The inverse transform: transform(inverse(g, b)) == g for every valid green state g
and any blue rows b, and inverse(transform(b), b) == b (an unchanged SKU writes nothing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluegreen.core.errors import TransformError
from schemas.catalog.inverse import WRITTEN, GreenAggregate, inverse
from schemas.catalog.transform import (
    Listing,
    ListingUpsert,
    derive_product,
    listing_of,
    listing_upsert,
)
from schemas.envelope import Version
from tests.support.green_states import blue_rows, green_aggregate

_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def forward(rows: Iterable[Mapping[str, Any]]) -> GreenAggregate:
    """What green holds for these blue rows (rows the transform rejects left out)."""
    mapped: list[ListingUpsert] = []
    for row in rows:
        try:
            mapped.append(listing_upsert({"id": 0, **row}, Version(0, 0)))
        except TransformError:
            continue
    listings = {item.channel: listing_of(item) for item in mapped}
    return GreenAggregate("BG-1", derive_product(mapped), listings)


def by_channel(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["channel"]: {c: row[c] for c in WRITTEN} for row in rows}


@_PROPERTY
@given(green_aggregate(), blue_rows())
def test_transform_of_inverse_is_green(green: GreenAggregate, blue: list[dict[str, Any]]) -> None:
    assert forward(inverse(green, blue)) == green


@_PROPERTY
@given(blue_rows())
def test_inverse_of_transform_is_blue(blue: list[dict[str, Any]]) -> None:
    assert by_channel(inverse(forward(blue), blue)) == by_channel(blue)


@_PROPERTY
@given(green_aggregate(), blue_rows())
def test_inverse_is_idempotent(green: GreenAggregate, blue: list[dict[str, Any]]) -> None:
    once = inverse(green, blue)
    assert by_channel(inverse(green, once)) == by_channel(once)


@_PROPERTY
@given(blue_rows())
def test_a_product_gone_from_green_deletes_its_mappable_rows(blue: list[dict[str, Any]]) -> None:
    kept = inverse(GreenAggregate("BG-1", None, {}), blue)
    assert forward(kept).listings == {}
    assert by_channel(kept).items() <= by_channel(blue).items()


def _row(channel: str, **overrides: Any) -> dict[str, Any]:
    attributes = {
        "US": {"color": "Gray", "size_us": 9.5, "weight_lb": 1.5},
        "GB": {"colour": "Grey", "size_uk": 8.5, "weight_g": 680},
        "EU": {"colour": "Grau", "size_eu": 42.5, "weight_g": 680},
    }[channel]
    row = {
        "id": 1,
        "sku": "BG-1",
        "channel": channel,
        "product_type": f"Sneaker {channel}",
        "name": f"Trail Sneaker {channel}",
        "description": f"copy {channel}",
        "attributes": attributes,
        "price": Decimal("99.99"),
        "currency": {"US": "USD", "GB": "GBP", "EU": "EUR"}[channel],
        "stock": None,
        "published": True,
        "created_at": T0,
        "updated_at": T0,
    }
    row.update(overrides)
    return row


SHOE = [_row("US"), _row("GB"), _row("EU")]


def _changed(**product: Any) -> GreenAggregate:
    green = forward(SHOE)
    assert green.product is not None
    return GreenAggregate("BG-1", replace(green.product, **product), green.listings)


def test_a_product_change_goes_to_every_channel_in_its_own_form() -> None:
    green = forward(SHOE)
    assert green.product is not None
    attributes = {**green.product.attributes, "size_eu": "44", "weight_g": 907}
    rows = by_channel(inverse(_changed(attributes=attributes, name="Aero"), SHOE))
    assert rows["US"]["attributes"] == {"color": "Gray", "size_us": 11, "weight_lb": 2.0}
    assert rows["GB"]["attributes"] == {"colour": "Grey", "size_uk": 10, "weight_g": 907}
    assert rows["EU"]["attributes"] == {"colour": "Grau", "size_eu": 44, "weight_g": 907}
    assert [rows[ch]["name"] for ch in ("US", "GB", "EU")] == [
        "Aero",
        "Trail Sneaker GB",
        "Trail Sneaker EU",
    ]


def test_pounds_take_a_third_decimal_when_two_do_not_give_the_grams_back() -> None:
    green = forward(SHOE)
    assert green.product is not None
    rows = by_channel(
        inverse(_changed(attributes={**green.product.attributes, "weight_g": 1001}), SHOE)
    )
    assert rows["US"]["attributes"]["weight_lb"] == 2.207


def test_a_type_change_keeps_the_suffix_and_stock_stays_untracked() -> None:
    rows = by_channel(inverse(_changed(product_type="Boot"), SHOE))
    assert [rows[ch]["product_type"] for ch in ("US", "GB", "EU")] == [
        "Boot US",
        "Boot GB",
        "Boot EU",
    ]
    assert {row["stock"] for row in rows.values()} == {None}


def test_a_new_listing_inserts_its_row_in_the_channel_convention() -> None:
    green = forward(SHOE[:1])
    listing = Listing("BG-1", "GB", Decimal("5.00"), "GBP", 3, False, T0, T0)
    rows = by_channel(
        inverse(GreenAggregate("BG-1", green.product, {**green.listings, "GB": listing}), SHOE[:1])
    )
    assert rows["GB"]["attributes"] == {"colour": "Gray", "size_uk": 8.5, "weight_g": 680}
    assert (rows["GB"]["product_type"], rows["GB"]["stock"]) == ("Sneaker GB", 3)


def test_a_deleted_listing_deletes_its_row_and_the_next_channel_takes_the_product() -> None:
    green = forward(SHOE)
    listings = {ch: item for ch, item in green.listings.items() if ch != "US"}
    rows = by_channel(inverse(GreenAggregate("BG-1", green.product, listings), SHOE))
    assert set(rows) == {"GB", "EU"}
    assert rows["GB"]["name"] == "Trail Sneaker US"  # green has one name: GB's copy now holds it


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"product_type": "T" * 78}, "too long"),
        ({"attributes": {"size_eu": "30"}}, "size_eu"),
        ({"attributes": {"colour": "Red"}}, "colour"),
    ],
)
def test_a_green_state_blue_cannot_hold_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransformError, match=reason):
        inverse(_changed(**change), SHOE)


@given(st.data())
@settings(max_examples=50, deadline=None)
def test_an_unchanged_sku_writes_nothing_even_from_seed_like_rows(data: st.DataObject) -> None:
    rows = [row for row in SHOE if data.draw(st.booleans())]
    assert by_channel(inverse(forward(rows), rows)) == by_channel(rows)
