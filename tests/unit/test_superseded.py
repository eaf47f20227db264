"""The listing keys a dead letter's change would touch: the same keys transform() writes."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.catalog.superseded import listing_keys
from schemas.catalog.transform import transform
from schemas.envelope import Op, Version, absent_event, message_event
from tests.support.events import TABLE, blue_row, event

V = Version(100, 1)
MOVED = blue_row(sku="BG-0000002")
OTHER_CHANNEL = blue_row(channel="GB", currency="GBP", product_type="Sneaker GB", attributes="{}")

VALID = [
    pytest.param(event(Op.READ, after=blue_row(), version=Version(50, 0)), id="snapshot read"),
    pytest.param(event(Op.CREATE, after=blue_row(sku="  BG-0000001 ")), id="create, padded sku"),
    pytest.param(event(Op.UPDATE, before=blue_row(), after=blue_row(stock=3)), id="update"),
    pytest.param(event(Op.UPDATE, before=blue_row(), after=MOVED), id="move to another sku"),
    pytest.param(event(Op.UPDATE, before=blue_row(), after=OTHER_CHANNEL), id="move channel"),
    pytest.param(event(Op.UPDATE, before=None, after=blue_row()), id="update, no before"),
    pytest.param(event(Op.DELETE, before=blue_row()), id="delete"),
    pytest.param(
        absent_event(TABLE, {"sku": "BG-0000009", "channel": "EU"}, version=V, ts_ms=0),
        id="repair: absent key",
    ),
]


@pytest.mark.parametrize("change", VALID)
def test_the_keys_are_exactly_those_transform_writes(change: dict[str, Any]) -> None:
    assert listing_keys(change) == [op.key for op in transform(change)]


def test_a_move_touches_the_old_key_and_the_new_one() -> None:
    change = event(Op.UPDATE, before=blue_row(), after=MOVED)
    assert listing_keys(change) == [("BG-0000001", "US"), ("BG-0000002", "US")]


@pytest.mark.parametrize(
    "invalid",
    [
        blue_row(currency="EUR"),
        blue_row(product_type="Sneaker"),
        blue_row(attributes='{"size_us": 42.3}'),
    ],
    ids=["wrong currency", "type without channel suffix", "size 42.3"],
)
def test_the_keys_of_a_row_that_does_not_transform(invalid: dict[str, Any]) -> None:
    assert listing_keys(event(Op.UPDATE, before=blue_row(), after=invalid)) == [
        ("BG-0000001", "US")
    ]


def test_changes_that_name_no_listing_key_have_none() -> None:
    truncate = event(Op.TRUNCATE)
    fence = message_event(TABLE, prefix="f", content="1", version=V, txid=None, ts_ms=0)
    assert listing_keys(truncate) is None
    assert listing_keys(fence) is None
    assert listing_keys(event(Op.CREATE, after=None)) is None
    assert listing_keys(event(Op.DELETE, before=None)) is None
