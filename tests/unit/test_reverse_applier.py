"""The reverse applier's pure pieces: the write difference, green's rows grouped per
SKU, the statements composed from the ReverseSpec, origin names, and batching."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Message
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from consumers.positions import REVERSE, PositionMovedError
from consumers.reverse.blue import ReverseStatements, difference
from consumers.reverse.origin import origin_names
from consumers.reverse.service import ReverseApplyService
from schemas import reverse
from schemas.catalog import CATALOG
from schemas.catalog.inverse import WRITTEN, GreenAggregate
from schemas.catalog.reverse_spec import aggregates
from schemas.control import FENCE_PREFIX, HEARTBEAT_PREFIX
from schemas.envelope import Op, Version

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SPEC = CATALOG.reverse
assert SPEC is not None


def _row(channel: str, **over: Any) -> dict[str, Any]:
    row = {c: None for c in WRITTEN}
    row.update(sku="A", channel=channel, attributes={"color": "Red"}, price=Decimal("1.00"))
    row.update(over)
    return row


def test_the_difference_writes_only_changed_rows_and_deletes_the_rest() -> None:
    existing = [_row("US", id=1), _row("GB", id=2), _row("EU", id=3)]
    wanted = [_row("US"), _row("GB", price=Decimal("2.00"))]
    upserts, deletes = difference(SPEC, existing, wanted)
    assert deletes == [("A", "EU")]
    assert len(upserts) == 1
    written = dict(zip(WRITTEN, upserts[0], strict=True))
    assert (written["channel"], written["price"]) == ("GB", Decimal("2.00"))
    assert isinstance(written["attributes"], Jsonb)  # a dict is written as JSON


def test_the_difference_of_an_unchanged_aggregate_is_empty() -> None:
    rows = [_row("US", id=1)]
    assert difference(SPEC, rows, [_row("US")]) == ([], [])


def test_green_rows_are_grouped_per_sku_and_absent_skus_have_no_product() -> None:
    product = ("A", "Boot", "Name", None, {}, "US", T0, T0)
    rows = [
        ("A", *product, "US", Decimal("1.00"), "USD", 1, True, T0, T0),
        ("A", *product, "EU", Decimal("2.00"), "EUR", 2, False, T0, T0),
    ]
    states = aggregates(["A", "B"], rows)
    a = states["A"]
    assert isinstance(a, GreenAggregate) and a.product is not None
    assert a.product.product_type == "Boot"
    assert sorted(a.listings) == ["EU", "US"]
    assert states["B"] == GreenAggregate("B", None, {})


def test_a_product_without_listings_is_held_with_none() -> None:
    product = ("A", "Boot", "Name", None, {}, "US", T0, T0)
    row = ("A", *product, None, None, None, None, None, None, None)
    assert aggregates(["A"], [row])["A"].listings == {}


def test_statements_come_from_the_spec() -> None:
    statements = ReverseStatements(SPEC)
    upsert = statements.upsert.as_string()
    assert 'ON CONFLICT ("sku", "channel")' in upsert
    assert '"id"' not in upsert  # blue's identity is never written
    assert statements.read.as_string().endswith("FOR UPDATE")
    assert "FOR UPDATE" not in statements.select.as_string()


def test_origin_names_share_the_prefix_blue_capture_skips() -> None:
    assert origin_names(3) == ["bluegreen_reverse_1", "bluegreen_reverse_2", "bluegreen_reverse_3"]


def test_a_moved_reverse_position_names_blue() -> None:
    assert (
        str(PositionMovedError({2: 7}, REVERSE.side)) == "blue's positions moved: partition 2 at 7"
    )


def _event(partition: int, offset: int, change: reverse.GreenChange) -> Message:
    return Message(topic="rev", partition=partition, offset=offset, value=reverse.encode(change))


def test_a_batch_holds_keys_with_their_newest_lsn_fences_and_heartbeats() -> None:
    service = ReverseApplyService(Settings(), CATALOG, Metrics(CollectorRegistry()))
    service._owned = {0: 10, 1: 3}
    messages = [
        _event(0, 10, reverse.GreenChange("A", "catalog.product", Op.UPDATE, Version(50, 1), 1)),
        _event(0, 11, reverse.GreenChange("A", "catalog.product", Op.UPDATE, Version(40, 1), 2)),
        _event(
            0, 12, reverse.GreenChange("", "", Op.MESSAGE, Version(60, 1), 3, FENCE_PREFIX, "f")
        ),
        _event(
            1, 3, reverse.GreenChange("", "", Op.MESSAGE, Version(0, 0), 9, HEARTBEAT_PREFIX, "")
        ),
        _event(2, 0, reverse.GreenChange("B", "catalog.product", Op.DELETE, Version(70, 1), 4)),
    ]
    batch = service._batch(messages)
    assert batch.keys == {"A": 50}  # partition 2 is not this applier's
    assert batch.expected == {0: 10, 1: 3}
    assert batch.progress[0].next_offset == 13
    assert batch.progress[0].fence is not None and batch.progress[0].fence.lsn == 60
    assert (batch.progress[0].src_lsn, batch.progress[1].src_ts_ms) == (50, 9)
