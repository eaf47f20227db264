"""Per-key order by construction: every operation on a green key is keyed by that key.

A blue row that moves to another SKU is two operations, each on its own aggregate's
partition: the delete keyed by the old SKU, the row's new state keyed by the new one,
both at the change's version. A move to another channel stays one event (one SKU).
"""

from __future__ import annotations

from producers.cdc.changes import ChangeBuilder, KeyedChange
from producers.cdc.pgoutput import Begin, Commit, Relation, RelationColumn, Update
from schemas.catalog import SOURCE
from schemas.catalog.transform import ListingDelete, ListingUpsert, transform
from schemas.codec import default_codec
from schemas.envelope import Op, Version

_TEXT_OID = 25
_COMMIT_LSN = 0x1_0000_0100


def _relation() -> Relation:
    columns = tuple(RelationColumn(name, _TEXT_OID, -1, name == "id") for name in SOURCE.names)
    return Relation(16384, SOURCE.schema, SOURCE.table, "f", columns)


def _row(sku: str, channel: str) -> tuple[str | None, ...]:
    values = {
        "id": "7",
        "sku": sku,
        "channel": channel,
        "product_type": f"Sneaker {channel}",
        "name": "Runner",
        "description": None,
        "attributes": "{}",
        "price": "10.00",
        "currency": {"US": "USD", "GB": "GBP", "EU": "EUR"}[channel],
        "stock": "3",
        "published": "t",
        "created_at": "2024-05-01 12:00:00+00",
        "updated_at": "2024-05-01 12:00:00+00",
    }
    return tuple(values[name] for name in SOURCE.names)


def _changes(old: tuple[str | None, ...], new: tuple[str | None, ...]) -> list[KeyedChange]:
    builder = ChangeBuilder(SOURCE, "blue")
    builder.feed(_relation())
    builder.feed(Begin(_COMMIT_LSN, 1_700_000_000_000_000, 42))
    actions = builder.feed(Update(16384, old, False, new))
    builder.feed(Commit(0, _COMMIT_LSN, _COMMIT_LSN + 40, 1_700_000_000_000_000))
    assert all(isinstance(a, KeyedChange) for a in actions)
    return [a for a in actions if isinstance(a, KeyedChange)]


def _delivered(change: KeyedChange) -> dict[str, object]:
    """The event as a consumer decodes it from the topic."""
    codec = default_codec()
    return codec.decode(codec.encode(ChangeBuilder(SOURCE, "blue").event_of(change)))


def test_a_move_to_another_sku_is_a_delete_and_a_create_each_keyed_by_its_own_sku() -> None:
    changes = _changes(_row("SKU-OLD", "US"), _row("SKU-NEW", "US"))
    assert [(c.op, c.key) for c in changes] == [(Op.DELETE, b"SKU-OLD"), (Op.CREATE, b"SKU-NEW")]
    assert changes[0].version == changes[1].version == Version(_COMMIT_LSN, 1)
    old_side = transform(_delivered(changes[0]))
    new_side = transform(_delivered(changes[1]))
    # Each event touches only listings of the SKU it is keyed by.
    assert [type(op) for op in old_side] == [ListingDelete]
    assert {op.sku for op in old_side} == {"SKU-OLD"}
    assert [type(op) for op in new_side] == [ListingUpsert]
    assert {op.sku for op in new_side} == {"SKU-NEW"}


def test_a_move_to_another_channel_stays_one_event_of_its_sku() -> None:
    changes = _changes(_row("SKU-1", "US"), _row("SKU-1", "GB"))
    assert [(c.op, c.key) for c in changes] == [(Op.UPDATE, b"SKU-1")]
    ops = transform(_delivered(changes[0]))
    assert [(type(op), op.key) for op in ops] == [
        (ListingDelete, ("SKU-1", "US")),
        (ListingUpsert, ("SKU-1", "GB")),
    ]


def test_an_update_in_place_is_one_update() -> None:
    changes = _changes(_row("SKU-1", "US"), _row("SKU-1", "US"))
    assert [(c.op, c.key, c.version) for c in changes] == [
        (Op.UPDATE, b"SKU-1", Version(_COMMIT_LSN, 1))
    ]
