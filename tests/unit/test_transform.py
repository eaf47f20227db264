import json
from decimal import Decimal

import pytest

from bluegreen.core.errors import TransformError
from schemas.catalog.transform import (
    ListingDelete,
    ListingUpsert,
    derive_product,
    listing_upsert,
    transform,
    transform_state,
)
from schemas.envelope import Op, Version, absent_event
from tests.support.events import TABLE, blue_row, event

V = Version(100, 1)


def test_snapshot_row_becomes_a_unified_listing() -> None:
    [op] = transform(event(Op.READ, after=blue_row(), version=Version(50, 0)))
    assert isinstance(op, ListingUpsert)
    assert op.key == ("BG-0000001", "US")
    assert op.version == Version(50, 0)
    assert op.product_type == "Sneaker"
    assert op.attributes == {"color": "Black", "size_eu": "42.5", "weight_g": 680}
    assert (op.price, op.currency, op.stock, op.published) == (Decimal("99.99"), "USD", 12, True)


@pytest.mark.parametrize(
    ("channel", "attributes", "unified"),
    [
        ("US", {"size_us": 9, "weight_lb": 2.2}, {"size_eu": "42", "weight_g": 998}),
        (
            "GB",
            {"size_uk": 8.5, "weight_g": 700, "colour": "Grey"},
            {"size_eu": "42.5", "weight_g": 700, "color": "Grey"},
        ),
        ("EU", {"size_eu": 43, "colour": "Grau"}, {"size_eu": "43", "color": "Grau"}),
        ("US", {"size_us": "m", "care": "hand wash"}, {"size_eu": "M", "care": "hand wash"}),
        ("EU", {"volume_l": 22}, {"volume_l": 22}),
    ],
)
def test_attribute_names_and_units_are_unified(channel, attributes, unified) -> None:
    currency = {"US": "USD", "GB": "GBP", "EU": "EUR"}[channel]
    row = blue_row(
        channel=channel,
        currency=currency,
        product_type=f"Boot {channel}",
        attributes=json.dumps(attributes),
    )
    op = listing_upsert(row, V)
    assert op.attributes == unified
    assert op.product_type == "Boot"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"currency": "EUR"}, "currency 'EUR' is not channel US's USD"),
        ({"product_type": "Sneaker GB"}, "does not end with its channel 'US'"),
        ({"attributes": '{"size_uk": 9}'}, "'size_uk' does not belong to US"),
        ({"attributes": '{"size_us": 9.3}'}, "not a whole or half size"),
        ({"attributes": '{"size_us": "huge"}'}, "neither numeric nor a letter size"),
        ({"attributes": '{"weight_lb": -1}'}, "not a non-negative number"),
        ({"attributes": '{"weight_g": 1.5}'}, "not a non-negative integer"),
        ({"attributes": "[1, 2]"}, "not a JSON object"),
        ({"attributes": "{oops"}, "not JSON"),
        ({"stock": -3}, "negative stock"),
        ({"name": "   "}, "empty name"),
        ({"channel": "JP"}, "unknown channel"),
        ({"price": Decimal("-1.00")}, "non-negative numeric"),
    ],
)
def test_rows_that_cannot_be_mapped_are_rejected_with_a_reason(overrides, reason) -> None:
    with pytest.raises(TransformError, match=reason) as err:
        listing_upsert(blue_row(**overrides), V)
    assert "blue row id=1" in str(err.value)


def test_untracked_stock_is_sold_as_none() -> None:
    assert listing_upsert(blue_row(stock=None), V).stock == 0


def test_update_moving_a_row_to_another_sku_deletes_the_old_listing() -> None:
    before = blue_row()
    after = blue_row(sku="BG-0000002")
    ops = transform(event(Op.UPDATE, before=before, after=after, version=V))
    assert ops[0] == ListingDelete("BG-0000001", "US", V)
    assert isinstance(ops[1], ListingUpsert) and ops[1].key == ("BG-0000002", "US")


def test_plain_update_and_delete() -> None:
    [up] = transform(event(Op.UPDATE, before=blue_row(), after=blue_row(stock=3), version=V))
    assert isinstance(up, ListingUpsert) and up.stock == 3
    assert transform(event(Op.DELETE, before=blue_row(), version=V)) == [
        ListingDelete("BG-0000001", "US", V)
    ]


def test_messages_and_truncates_imply_no_listing_operation() -> None:
    assert transform(event(Op.MESSAGE)) == []
    assert transform(event(Op.TRUNCATE)) == []


def test_event_without_its_image_is_rejected() -> None:
    with pytest.raises(TransformError, match="without its 'after' image"):
        transform(event(Op.CREATE))


def test_product_comes_from_the_primary_channel_then_the_next() -> None:
    us = listing_upsert(blue_row(), V)
    gb = listing_upsert(
        blue_row(
            id=2,
            channel="GB",
            currency="GBP",
            product_type="Sneaker GB",
            name="Trail Black Trainer",
            attributes='{"colour": "Black", "size_uk": 8.5, "weight_g": 700}',
            created_at=blue_row()["created_at"].replace(year=2020),
        ),
        V,
    )
    product = derive_product([gb, us])
    assert product is not None
    assert (product.name, product.primary_channel) == ("Trail Black Sneaker", "US")
    assert product.created_at.year == 2020  # the earliest listing
    fallback = derive_product([gb])
    assert fallback is not None and fallback.name == "Trail Black Trainer"
    assert fallback.attributes == {"color": "Black", "size_eu": "42.5", "weight_g": 700}
    assert derive_product([]) is None


def test_transform_state_of_blue_rows() -> None:
    rows = [
        blue_row(),
        blue_row(id=2, channel="EU", currency="EUR", product_type="Sneaker EU", attributes="{}"),
        blue_row(id=3, sku="BG-0000002"),
    ]
    state = transform_state(rows, Version(9, 0))
    assert set(state.products) == {"BG-0000001", "BG-0000002"}
    assert set(state.listings) == {("BG-0000001", "US"), ("BG-0000001", "EU"), ("BG-0000002", "US")}


def test_delete_found_by_a_repair_carries_only_the_key() -> None:
    ev = absent_event(TABLE, {"sku": "BG-9", "channel": "GB"}, version=Version(70, 0), ts_ms=1)
    assert transform(ev) == [ListingDelete("BG-9", "GB", Version(70, 0))]
    bare = event(Op.DELETE)
    with pytest.raises(TransformError, match="neither a before image nor a key"):
        transform(bare)
