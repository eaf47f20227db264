"""One canonical text of an aggregate's rows in a green table, written identically by
PostgreSQL (over green's rows) and by Python (over transform(blue)), so that green's
side is digested where it is cheapest: in SQL, one md5 per aggregate shipped instead of
its rows.

A row's text is the JSON array of its compared fields' texts, ``["SKU-1", "US",
"12.50", null, ...]``: PostgreSQL's ``jsonb_build_array(f1::text, ...)::text`` and
Python's ``json`` (``ensure_ascii=False``, default separators) escape strings alike,
and an array is self-delimiting, so no two different rows share a text. An
aggregate's text is its rows' texts in part order (code point order of the part's
text, ``COLLATE "C"`` in SQL); its digest the md5 of that, in hex.

A field's text is what PostgreSQL prints for the column cast to text (green's
connection runs with ``DateStyle=ISO`` and ``TimeZone=UTC``): ``_text`` writes the
same for Python's values of the usual column types. A value it cannot write that way
(bytes, say) gets a text no PostgreSQL text holds (it starts with NUL): its
aggregate's digests never agree and it is compared row by row. So a digest can only
be wrong in one direction: two equal aggregates whose digests differ are compared
row by row and found equal; two aggregates whose digests agree have equal texts, and
equal texts are equal values. A domain whose ``normalize`` rewrites a field (JSON,
say) must write what PostgreSQL prints for that column, or its aggregates are always
compared row by row (correct, only slower).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from psycopg import sql

from schemas.domain import GreenTable

# json's quoting of a string (its C version when built), as json.dumps(ensure_ascii=False).
_quoted: Callable[[str], str] = json.encoder.encode_basestring


@lru_cache(maxsize=1 << 16)  # an aggregate's rows share timestamps (a product's are its rows')
def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        return _trimmed(value.isoformat(" "), value.microsecond)
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "2019-01-01 00:00:00[.ffffff]+00:00" -> PostgreSQL's "...+00"
    return _trimmed(value.isoformat(" ")[:-6], value.microsecond) + "+00"


def _trimmed(text: str, microsecond: int) -> str:
    """PostgreSQL prints fractional seconds without trailing zeros, and none when zero."""
    return text.rstrip("0") if microsecond else text


def _time(value: time) -> str:
    if value.tzinfo is not None:
        return "\x00" + repr(value)  # timetz: compared row by row
    return _trimmed(value.isoformat(), value.microsecond)


_TEXTS: dict[type, Callable[[Any], str]] = {
    bool: lambda v: "true" if v else "false",
    int: str,
    Decimal: lambda v: format(v, "f"),
    datetime: _timestamp,
    date: date.isoformat,
    time: _time,
    UUID: str,
}


def _text(value: Any) -> str:
    """What PostgreSQL prints for this (not None) value cast to text, or a text it never
    prints."""
    if type(value) is str:
        return value
    write = _TEXTS.get(type(value))
    if write is None:
        return "\x00" + repr(value)
    return write(value)


def row_text(values: tuple[Any, ...]) -> str:
    """One row's canonical text (see the module docstring): what json.dumps writes for
    the list of the fields' texts, built from json's own (C) string quoting."""
    parts = []
    for value in values:
        if value is None:
            parts.append("null")
        elif type(value) is str:
            parts.append(_quoted(value))
        else:
            parts.append(_quoted(_text(value)))
    return "[" + ", ".join(parts) + "]"


def digest(rows: Mapping[Any, tuple[Any, ...]]) -> str | None:
    """One aggregate's digest in one table: its rows by part (None: a one-row table);
    None when it has no row there (SQL then has no group for it)."""
    if not rows:
        return None
    if len(rows) == 1:
        text = row_text(next(iter(rows.values())))
    else:
        ordered = sorted(rows.items(), key=lambda item: "" if item[0] is None else str(item[0]))
        text = "".join(row_text(row) for _, row in ordered)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_query(table: GreenTable, only: bool) -> sql.Composed:
    """Per aggregate, in aggregate order: its key, its digest, the newest version of its
    rows and their number; with `only`, of the aggregates in %(only)s alone."""
    key = sql.Identifier(table.fields[0])
    texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(f)) for f in table.fields)
    order: sql.Composable = sql.SQL("")
    if table.part is not None:
        part = sql.Identifier(table.fields[table.part])
        order = sql.SQL(' ORDER BY {}::text COLLATE "C"').format(part)
    where = sql.SQL("WHERE {}::text = ANY(%(only)s::text[])").format(key) if only else sql.SQL("")
    return sql.SQL(
        "SELECT {key}, md5(string_agg(jsonb_build_array({texts})::text, ''{order})), "
        "max({version}), count(*) FROM {table} {where} GROUP BY {key} ORDER BY {key}"
    ).format(
        key=key,
        texts=texts,
        order=order,
        version=sql.Identifier(table.version),
        table=sql.Identifier(table.schema, table.table),
        where=where,
    )
