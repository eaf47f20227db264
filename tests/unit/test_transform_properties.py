"""Property: whatever the history of blue, green converges to transform(final blue).

Histories are random transactions of inserts, updates (including moves to another
SKU or channel and primary-key changes) and deletes. The stream green receives is
those changes plus a snapshot taken at a random point, delivered in any order
with replays: the version guard must make all of that irrelevant.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog.transform import transform, transform_state
from schemas.envelope import Op, Version
from tests.support.events import blue_row, event
from tests.support.memory_green import MemoryGreen

SKUS = [f"BG-{n:07d}" for n in range(1, 5)]
CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}
SIZE_KEY = {"US": "size_us", "GB": "size_uk", "EU": "size_eu"}


def make_row(id_: int, sku: str, channel: str, draw: Any) -> dict[str, Any]:
    size = draw(st.integers(min_value=10, max_value=30)) / 2
    return blue_row(
        id=id_,
        sku=sku,
        channel=channel,
        currency=CURRENCY[channel],
        product_type=f"{draw(st.sampled_from(['Boot', 'Sneaker']))} {channel}",
        name=draw(st.sampled_from(["Aero", "Größe 42", "Trail ✓", "Nordic"])),
        description=draw(st.none() | st.text(max_size=20)),
        attributes=json.dumps({SIZE_KEY[channel]: size, "material": "wool"}),
        price=Decimal(draw(st.integers(min_value=0, max_value=99_999))) / 100,
        stock=draw(st.none() | st.integers(min_value=0, max_value=50)),
        published=draw(st.booleans()),
    )


def history(draw: Any) -> tuple[list[list[dict]], dict[int, dict], int, dict[int, dict]]:
    """Transactions of events, the final blue rows, and a snapshot point with its rows."""
    blue: dict[int, dict] = {}
    next_id = 1
    transactions: list[list[dict]] = []
    txn_count = draw(st.integers(min_value=0, max_value=12))
    snapshot_at = draw(st.integers(min_value=0, max_value=txn_count))
    snapshot_rows: dict[int, dict] = {}
    for txn in range(txn_count):
        if txn == snapshot_at:
            snapshot_rows = {k: dict(v) for k, v in blue.items()}
        lsn = 1000 * (txn + 1)
        events: list[dict] = []

        def emit(
            op: Op, before: dict | None, after: dict | None, events: list = events, lsn: int = lsn
        ) -> None:
            events.append(
                event(op, before=before, after=after, version=Version(lsn, len(events) + 1))
            )

        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            taken = {(r["sku"], r["channel"]) for r in blue.values()}
            action = draw(st.sampled_from(["insert", "update", "move", "rekey", "delete"]))
            if action == "insert" or not blue:
                free = [(s, c) for s in SKUS for c in CURRENCY if (s, c) not in taken]
                if not free:
                    continue
                sku, channel = draw(st.sampled_from(free))
                row = make_row(next_id, sku, channel, draw)
                next_id += 1
                blue[row["id"]] = row
                emit(Op.CREATE, None, dict(row))
                continue
            row_id = draw(st.sampled_from(sorted(blue)))
            old = blue[row_id]
            if action == "delete":
                del blue[row_id]
                emit(Op.DELETE, dict(old), None)
            elif action == "update":
                new = make_row(row_id, old["sku"], old["channel"], draw)
                blue[row_id] = new
                emit(Op.UPDATE, dict(old), dict(new))
            elif action == "move":  # another SKU and/or channel, same blue id
                free = [(s, c) for s in SKUS for c in CURRENCY if (s, c) not in taken]
                if not free:
                    continue
                sku, channel = draw(st.sampled_from(free))
                new = make_row(row_id, sku, channel, draw)
                blue[row_id] = new
                emit(Op.UPDATE, dict(old), dict(new))
            else:  # primary-key change: the CDC producer emits a delete and a create
                new = {**old, "id": next_id}
                next_id += 1
                del blue[row_id]
                blue[new["id"]] = new
                emit(Op.DELETE, dict(old), None)
                emit(Op.CREATE, None, dict(new))
        transactions.append(events)
    if snapshot_at == txn_count:
        snapshot_rows = {k: dict(v) for k, v in blue.items()}
    return transactions, blue, snapshot_at, snapshot_rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_changes_applied_in_order_equal_transform_of_final_blue(data: st.DataObject) -> None:
    transactions, final, _, _ = history(data.draw)
    green = MemoryGreen()
    for events in transactions:
        for ev in events:
            green.apply(transform(ev))
    assert green.state() == transform_state(final.values(), Version(0, 0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_snapshot_plus_stream_in_any_order_with_replays_converges(data: st.DataObject) -> None:
    transactions, final, snapshot_at, snapshot_rows = history(data.draw)
    # The snapshot's consistent point lies between the transactions before and after it.
    point = 1000 * snapshot_at + 500
    snapshot = [
        event(Op.READ, after=row, version=Version(point, 0)) for row in snapshot_rows.values()
    ]
    stream = [ev for events in transactions[snapshot_at:] for ev in events]
    delivered = snapshot + stream
    replays = data.draw(st.lists(st.sampled_from(delivered), max_size=10)) if delivered else []
    order = data.draw(st.permutations(delivered + replays))
    green = MemoryGreen()
    for ev in order:
        green.apply(transform(ev))
    assert green.state() == transform_state(final.values(), Version(0, 0))


def test_a_late_snapshot_row_cannot_resurrect_a_delete() -> None:
    row = blue_row()
    green = MemoryGreen()
    green.apply(transform(event(Op.DELETE, before=row, version=Version(2000, 1))))
    green.apply(transform(event(Op.READ, after=row, version=Version(1500, 0))))
    assert green.state().listings == {}
    assert green.state().products == {}
