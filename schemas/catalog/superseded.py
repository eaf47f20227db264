"""Which changes green has since overtaken: the catalog's side of superseded dead letters.

A dead letter is a change the consumer could not apply. If green has since
applied a newer version of every listing key that change would touch (the row
was fixed in blue, or deleted, and that change went through), applying the dead
letter now would change nothing: the version guard would refuse it. Such a
letter is *superseded*; re-submitting it only makes the same bad payload fail
again.

``listing_keys`` says which (SKU, channel) keys a change touches, read from its
images without validating them (the letter's row is the one that did not
transform); it follows ``transform()`` and a unit test holds the two together.
``newer_in_green`` is the one place that asks green, for a whole set of keys at
once, which of them it holds at a strictly newer version (tombstones count).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import psycopg

from schemas.domain import VersionedKey
from schemas.envelope import Op

# A VersionedKey here is (sku, channel, src_lsn, src_seq): a listing key and the version a
# change would give it.

_NEWER = """
SELECT k.sku, k.channel, k.lsn, k.seq
FROM unnest(%s::varchar[], %s::varchar[], %s::bigint[], %s::integer[]) AS k(sku, channel, lsn, seq)
JOIN sync.listing_record r ON r.sku = k.sku AND r.channel = k.channel
WHERE (r.src_lsn, r.src_seq) > (k.lsn, k.seq)
"""


def listing_keys(event: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """The listing keys `transform(event)` would write, or None when a change is not
    about listings one by one (a truncate, a message) or lacks the image that names them."""
    op = event.get("op")
    before, after = event.get("before"), event.get("after")
    if op in (Op.READ, Op.CREATE, Op.UPDATE):
        if after is None:
            return None
        keys = [(str(after["sku"]).strip(), str(after["channel"]))]  # as listing_upsert keys it
        if op == Op.UPDATE and before is not None and _raw_key(before) != _raw_key(after):
            keys.insert(0, _raw_key(before))  # a move: the old listing is deleted
        return keys
    if op == Op.DELETE:
        image = before or event.get("key")
        return None if image is None else [_raw_key(image)]
    return None


def _raw_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (str(row["sku"]), str(row["channel"]))


def newer_in_green(
    green: psycopg.Connection[Any], keys: Collection[VersionedKey]
) -> set[VersionedKey]:
    """Those of `keys` whose listing green holds at a strictly newer version, in one query."""
    if not keys:
        return set()
    exists = green.execute("SELECT to_regclass('sync.listing_record')").fetchone()
    if exists is None or exists[0] is None:
        return set()
    skus, channels, lsns, seqs = (list(column) for column in zip(*keys, strict=True))
    rows = green.execute(_NEWER, (skus, channels, lsns, seqs)).fetchall()
    return {(str(s), str(c), int(lsn), int(seq)) for s, c, lsn, seq in rows}
