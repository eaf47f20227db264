"""Random histories of blue changes, as the producers would send them (hypothesis).

Transactions of inserts, updates (including moves to another SKU or channel and
primary-key changes) and deletes; a move to another SKU is a delete and a create,
one per SKU, at one version, as the CDC producer sends it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas.envelope import Op, Version
from tests.support.events import blue_row, event

SKUS = [f"BG-{n:07d}" for n in range(1, 5)]
CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}
SIZE_KEY = {"US": "size_us", "GB": "size_uk", "EU": "size_eu"}
_TEXT = st.characters(exclude_characters="\x00")  # PostgreSQL text holds no NUL


def make_row(id_: int, sku: str, channel: str, draw: Any) -> dict[str, Any]:
    size = draw(st.integers(min_value=10, max_value=30)) / 2
    return blue_row(
        id=id_,
        sku=sku,
        channel=channel,
        currency=CURRENCY[channel],
        product_type=f"{draw(st.sampled_from(['Boot', 'Sneaker']))} {channel}",
        name=draw(st.sampled_from(["Aero", "Größe 42", "Trail ✓", "Nordic"])),
        description=draw(st.none() | st.text(_TEXT, max_size=20)),
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
            op: Op,
            before: dict | None,
            after: dict | None,
            events: list = events,
            lsn: int = lsn,
            seq: int | None = None,
        ) -> None:
            version = Version(lsn, len(events) + 1 if seq is None else seq)
            events.append(event(op, before=before, after=after, version=version))

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
                if sku == old["sku"]:
                    emit(Op.UPDATE, dict(old), dict(new))
                else:  # as the CDC producer sends it: one operation per SKU, one version
                    emit(Op.DELETE, dict(old), None)
                    emit(Op.CREATE, None, dict(new), seq=len(events))
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
