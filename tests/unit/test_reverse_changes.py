"""Green's pgoutput stream into GreenChange events: one per (aggregate, table) and
transaction, control messages for every partition, forward-origin transactions left out."""

from __future__ import annotations

import pytest

from producers.cdc.changes import CaptureError, TxnBegin, TxnEnd
from producers.cdc.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    RelationColumn,
    Truncate,
    Update,
)
from producers.reverse.changes import Alone, Everywhere, GreenChangeBuilder, Keyed
from schemas.control import FENCE_PREFIX, FORWARD_ORIGIN, HEARTBEAT_PREFIX, REVERSE_ORIGIN
from schemas.domain import ReverseSpec
from schemas.envelope import Op, Version

SPEC = ReverseSpec(
    tables=(("catalog", "product"), ("catalog", "channel_listing")), key_column="sku"
)
LSN = 0x2_0000_0100
TS_US = 1_700_000_000_123_000


def column(name: str, key: bool = False) -> RelationColumn:
    return RelationColumn(name, 25, -1, key)


PRODUCT = Relation(1, "catalog", "product", "d", (column("sku", True), column("name")))
LISTING = Relation(
    2,
    "catalog",
    "channel_listing",
    "d",
    (column("sku", True), column("channel", True), column("price")),
)
OTHER = Relation(3, "sync", "apply_position", "d", (column("topic", True), column("sku")))


def run(*messages: object, skip: str | None = FORWARD_ORIGIN) -> list:
    builder = GreenChangeBuilder(SPEC, skip_origin=skip)
    actions: list = []
    for message in (PRODUCT, LISTING, OTHER, *messages):
        actions.extend(builder.feed(message))  # type: ignore[arg-type]
    return actions


def txn(*changes: object, origin: str | None = None) -> list[object]:
    head: list[object] = [Begin(LSN, TS_US, 7)]
    if origin is not None:
        head.append(Origin(0x99, origin))
    return [*head, *changes, Commit(0, LSN, LSN + 64, TS_US)]


def changes(actions: list) -> list:
    return [
        (type(a).__name__, a.change.key, a.change.table, a.change.op, a.change.version.seq)
        for a in actions
        if isinstance(a, (Keyed, Everywhere))
    ]


def test_one_event_per_aggregate_and_table_with_the_last_op() -> None:
    actions = run(
        *txn(
            Insert(1, ("SKU-1", "Runner")),
            Insert(2, ("SKU-1", "US", "10.00")),
            Insert(2, ("SKU-1", "GB", "9.00")),
            Update(1, None, False, ("SKU-1", "Runner 2")),
            Insert(1, ("SKU-2", "Boot")),
            Insert(3, ("t", "SKU-9")),  # not a published table of the spec
        )
    )
    assert isinstance(actions[0], TxnBegin) and isinstance(actions[-1], TxnEnd)
    assert changes(actions) == [
        ("Keyed", "SKU-1", "catalog.product", Op.UPDATE, 1),
        ("Keyed", "SKU-1", "catalog.channel_listing", Op.CREATE, 2),
        ("Keyed", "SKU-2", "catalog.product", Op.CREATE, 3),
    ]
    first = actions[1].change
    assert first.version == Version(LSN, 1) and first.ts_ms == TS_US // 1000
    assert {a.change.xid for a in actions[1:-1]} == {7}  # the applier waits until it sees it
    assert actions[-1].end_lsn == LSN + 64 and not actions[-1].skipped


def test_a_delete_names_its_aggregate_through_the_key_identity() -> None:
    actions = run(*txn(Delete(2, ("SKU-3", "US", None), True), Delete(1, ("SKU-3", None), True)))
    assert changes(actions) == [
        ("Keyed", "SKU-3", "catalog.channel_listing", Op.DELETE, 1),
        ("Keyed", "SKU-3", "catalog.product", Op.DELETE, 2),
    ]


def test_a_row_moved_to_another_aggregate_touches_both_old_first() -> None:
    actions = run(*txn(Update(2, ("SKU-OLD", "US", None), True, ("SKU-NEW", "US", "1.00"))))
    assert [c[1] for c in changes(actions)] == ["SKU-OLD", "SKU-NEW"]


def test_a_delete_without_the_key_is_refused_with_the_fix() -> None:
    with pytest.raises(CaptureError, match="replica identity"):
        run(*txn(Delete(1, (None, None), True)))


def test_fences_and_truncates_go_everywhere_in_transaction_order() -> None:
    actions = run(
        *txn(
            Insert(1, ("SKU-1", "x")),
            LogicalMessage(True, LSN - 8, FENCE_PREFIX, b"fence-7"),
            LogicalMessage(True, LSN - 4, "someone.else", b"ignored"),
            Truncate((2,), False, False),
        )
    )
    assert changes(actions) == [
        ("Keyed", "SKU-1", "catalog.product", Op.CREATE, 1),
        ("Everywhere", "", "", Op.MESSAGE, 2),
        ("Everywhere", "", "catalog.channel_listing", Op.TRUNCATE, 3),
    ]
    fence = actions[2].change
    assert (fence.prefix, fence.content) == (FENCE_PREFIX, "fence-7")


def test_a_non_transactional_heartbeat_is_a_unit_of_its_own() -> None:
    [alone] = run(LogicalMessage(False, 0x500, HEARTBEAT_PREFIX, b"1700000000000"))
    assert isinstance(alone, Alone) and alone.lsn == 0x500
    assert (alone.change.op, alone.change.prefix, alone.change.version) == (
        Op.MESSAGE,
        HEARTBEAT_PREFIX,
        Version(0x500, 1),
    )


def test_forward_origin_transactions_are_left_out_and_still_confirmed() -> None:
    body = (Insert(1, ("SKU-1", "x")), LogicalMessage(True, LSN - 8, FENCE_PREFIX, b"f"))
    skipped = run(*txn(*body, origin=FORWARD_ORIGIN + "_2"))
    assert changes(skipped) == []
    assert [type(a) for a in skipped] == [TxnBegin, TxnEnd] and skipped[-1].skipped
    for origin, skip in ((REVERSE_ORIGIN + "_1", FORWARD_ORIGIN), (FORWARD_ORIGIN + "_1", None)):
        assert len(changes(run(*txn(*body, origin=origin), skip=skip))) == 2
