"""Green's digests computed by PostgreSQL equal blue's computed in Python, value for
value: the two canonical encodings agree (numeric scale, NULLs, JSON key order,
timestamps and time zones, unicode), and a value that differs changes the digest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bluegreen.core import db
from bluegreen.core.config import Settings
from cutover.canonical import digest, digest_query
from schemas.catalog.verify_spec import PRODUCTS
from schemas.domain import GreenTable

pytestmark = pytest.mark.integration

FIELDS = ("k", "part", "label", "price", "amount", "count", "flag", "at", "naive", "day", "id")
TABLE = GreenTable("odd", "public", "odd", (*FIELDS, "doc"), part=1)
CEST = timezone(timedelta(hours=2))
TEXTS = [
    "",
    "plain",
    'quote " and \\ backslash',
    "line\nbreak\ttab\r",
    "\x01\x1f\x7f",
    "é ü ß 漢字 🙂",
    "\u2028\u00a0 spaces ",
    "null",
    '["a", null]',
    "(a,b)",
]
DOCS: list[Any] = [
    {},
    {"b": 1, "a": 2, "aa": 3, "é": 4, "Z": 5, "zz": [1, 2.5, None, True, "x"]},
    {"nested": {"y": {"deep": 'é\n"q"'}, "x": 1}, "list": [{"b": 1, "a": 0}]},
    {"weight_g": 900, "size_eu": "42.5", "color": "Navy", "f": 0.1, "n": -3},
    [1, "two", {"k": False}],
]


def _rows() -> list[tuple[Any, ...]]:
    rows = []
    for index, text in enumerate(TEXTS):
        at = datetime(2024, 3, 31, 1, 59, 59, [0, 1, 120000, 999999][index % 4], tzinfo=UTC)
        rows.append(
            (
                f"K{index % 3}",
                ["US", "GB", "EU", "é", "a", "B"][index % 6] + str(index),
                text,
                [Decimal("12.50"), Decimal("0.00"), Decimal("9999999999.99"), Decimal("-1.05")][
                    index % 4
                ],
                [Decimal("1.5"), Decimal("100"), Decimal("0.000001"), Decimal("-42.4200")][
                    index % 4
                ],
                [0, -1, 2**31 - 1, 7][index % 4],
                index % 2 == 0,
                at if index % 2 else at.astimezone(CEST),
                datetime(1999, 12, 31, 23, 59, 59, 500 * index),
                date(2000 + index, 2, 29 if index % 4 == 0 else 28),
                UUID(int=index * 7919),
                DOCS[index % len(DOCS)],
            )
        )
    rows.append(("K9", "none", None, None, None, None, None, None, None, None, None, None))
    return rows


@pytest.fixture
def green(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(settings.green_dsn, options="-c TimeZone=UTC -c DateStyle=ISO") as conn:
        conn.execute(
            "CREATE TABLE public.odd (k text, part text, label text, price numeric(12,2), "
            "amount numeric, count integer, flag boolean, at timestamptz, naive timestamp, "
            "day date, id uuid, doc jsonb, src_lsn bigint NOT NULL DEFAULT 1, "
            "PRIMARY KEY (k, part))"
        )
        conn.cursor().executemany(
            f"INSERT INTO public.odd ({', '.join((*FIELDS, 'doc'))}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(*row[:-1], None if row[-1] is None else Jsonb(row[-1])) for row in _rows()],
        )
        conn.commit()
        yield conn


def _python_digests(normalize: Any) -> dict[str, str | None]:
    by_key: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for row in _rows():
        by_key.setdefault(row[0], {})[row[1]] = normalize(row)
    return {key: digest(rows) for key, rows in by_key.items()}


def _canonical_doc(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The catalog's JSON canonical form, the one its product rows are compared in."""
    if row[-1] is None:
        return row
    product = PRODUCTS.normalize
    assert product is not None
    index = PRODUCTS.fields.index("attributes")
    fake = tuple(row[-1] if i == index else None for i in range(len(PRODUCTS.fields)))
    return (*row[:-1], product(fake)[index])


def test_postgres_and_python_digest_the_same_values_alike(green: psycopg.Connection[Any]) -> None:
    found = {key: md5 for key, md5, _, _ in green.execute(digest_query(TABLE, False)).fetchall()}
    assert found == _python_digests(_canonical_doc)
    assert len(found) == 4


def test_only_restricts_the_digests_to_the_keys_asked(green: psycopg.Connection[Any]) -> None:
    rows = green.execute(digest_query(TABLE, True), {"only": ["K1", "K9"]}).fetchall()
    assert [(key, count) for key, _, _, count in rows] == [("K1", 3), ("K9", 1)]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("price", "12.5"),  # the same number at another scale is another text
        ("label", "'plain '"),
        ("flag", "NULL"),
        ("at", "'2024-03-31 01:59:59.000002+00'"),
        (
            "doc",
            """'{"b": 1, "a": 2, "aa": 3, "é": 4, "Z": 5, "zz": [1, 2.50, null, true, "x"]}'""",
        ),
    ],
)
def test_a_changed_value_changes_its_aggregates_digest(
    green: psycopg.Connection[Any], column: str, value: str
) -> None:
    before = dict((k, m) for k, m, _, _ in green.execute(digest_query(TABLE, False)).fetchall())
    green.execute(f"UPDATE public.odd SET {column} = {value} WHERE k = 'K1' AND part = 'GB1'")
    after = dict((k, m) for k, m, _, _ in green.execute(digest_query(TABLE, False)).fetchall())
    assert after["K1"] != before["K1"]
    assert {k: m for k, m in after.items() if k != "K1"} == {
        k: m for k, m in before.items() if k != "K1"
    }
