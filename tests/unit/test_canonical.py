"""The canonical text of green rows as Python writes it (PostgreSQL's side is checked
against it in tests/integration/test_verify_digest.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

from cutover.canonical import digest, row_text
from schemas.catalog.verify_spec import PRODUCTS


def test_a_row_is_the_json_array_of_what_postgres_prints_for_each_field() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone(timedelta(hours=2)))
    row = ('a"b\n', None, Decimal("1.50"), True, 3, at, date(2024, 2, 29), time(1, 2, 3))
    assert row_text(row) == (
        '["a\\"b\\n", null, "1.50", "true", "3", "2024-01-02 01:04:05.12+00", '
        '"2024-02-29", "01:02:03"]'
    )


def test_whole_seconds_print_no_fraction_and_naive_timestamps_no_zone() -> None:
    assert row_text((datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 5))) == (
        '["2024-01-01 00:00:00+00", "2024-01-01 00:00:00.000005"]'
    )


def test_a_value_postgres_cannot_print_never_digests_like_a_text() -> None:
    assert digest({None: (b"x",)}) != digest({None: ("b'x'",)})
    assert "\\u0000" in row_text((b"x",))


def test_rows_are_digested_in_part_order_whatever_the_dict_order() -> None:
    one = {"US": ("SKU", "US"), "EU": ("SKU", "EU")}
    assert digest(one) == digest(dict(reversed(one.items())))
    assert digest({}) is None


def test_the_catalogs_json_is_written_in_jsonb_key_order() -> None:
    normalize = PRODUCTS.normalize
    assert normalize is not None
    index = PRODUCTS.fields.index("attributes")
    row = tuple(
        {"bb": 1, "a": {"zz": 1, "y": [2.5]}, "é": "x"} if i == index else None
        for i in range(len(PRODUCTS.fields))
    )
    assert normalize(row)[index] == '{"a": {"y": [2.5], "zz": 1}, "bb": 1, "é": "x"}'
