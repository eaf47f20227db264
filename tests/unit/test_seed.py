import hashlib
import json
from collections import Counter

import pytest

from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed import generate
from schemas.catalog.transform import listing_upsert
from schemas.envelope import Version


def digest(count: int, seed: int) -> str:
    h = hashlib.sha256()
    for row in generate(count, seed):
        h.update(repr(row).encode())
    return h.hexdigest()


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert digest(2000, 7) == digest(2000, 7)
    assert digest(2000, 7) != digest(2000, 8)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 10, 999, 5000])
def test_exact_count_with_ids_one_to_n(count: int) -> None:
    rows = list(generate(count, 42))
    assert [r[0] for r in rows] == list(range(1, count + 1))
    assert all(len(r) == len(COLUMNS) for r in rows)


def test_rows_are_realistic_and_all_map_to_green() -> None:
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in generate(20_000, 42)]
    keys = Counter((r["sku"], r["channel"]) for r in rows)
    assert max(keys.values()) == 1  # (sku, channel) is unique, as blue requires
    per_sku = Counter(r["sku"] for r in rows)
    assert {1, 2, 3} <= set(per_sku.values())  # some SKUs in one, two or three channels
    descriptions = [r["description"] for r in rows]
    assert 0.04 < sum(d is None for d in descriptions) / len(rows) < 0.12
    long = [d for d in descriptions if d and len(d.encode()) > 2048]
    assert 0.04 < len(long) / len(rows) < 0.12  # TOASTed in blue
    assert any(r["stock"] is None for r in rows)
    assert any(not r["name"].isascii() for r in rows)
    assert all(json.loads(r["attributes"]) for r in rows)
    assert {r["channel"] for r in rows} == {"US", "GB", "EU"}
    for row in rows:
        listing_upsert(row, Version(1, 0))  # raises on any row the transform cannot map


def test_late_eu_rows_come_after_their_sku() -> None:
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in generate(5000, 42)]
    first_id = {}
    late = 0
    for row in rows:
        first = first_id.setdefault(row["sku"], row["id"])
        if row["id"] - first > 3:
            late += 1
            assert row["channel"] == "EU"
    assert late > 0
