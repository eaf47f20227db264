"""Picking blue rows for the chaos load, and making rows the transform accepts.

Every row written is valid: the channel's currency, the type's channel suffix, the
channel's own size key, a non-empty name, a price that fits numeric(12,2), stock NULL
or >= 0. Pickers lock what they return (``FOR UPDATE``) unless told not to, and
raise ``Skip`` when no row fits right now.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from bluegreen.app.chaos.load_common import Skip
from schemas.catalog.seed import Kind
from schemas.catalog.transform import CHANNEL_CURRENCY, OWN_SIZE_KEY

CHANNELS = tuple(CHANNEL_CURRENCY)
_SIZE_KEYS = frozenset(OWN_SIZE_KEY.values())
_ROW_COLUMNS = (
    "id, sku, channel, product_type, name, description, attributes::text, price, currency, "
    "stock, published, created_at"
)
_ROW = sql.SQL(_ROW_COLUMNS)
INSERT = (
    "INSERT INTO legacy_product (sku, channel, product_type, name, description, attributes, "
    "price, currency, stock, published, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, now())"
)
_FOR_UPDATE = sql.SQL(" FOR UPDATE")
_NO_LOCK = sql.SQL("")
_ANY = sql.SQL("TRUE")


_ROW_NAMES = tuple(c.strip().split("::")[0] for c in _ROW_COLUMNS.split(","))


def as_row(values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_ROW_NAMES, values, strict=True))


def random_row(
    conn: psycopg.Connection,
    rng: random.Random,
    where: sql.Composable = _ANY,
    params: tuple[Any, ...] = (),
    *,
    lock: bool = True,
) -> dict[str, Any]:
    """A random live row (the first at or after a random id), locked for this transaction."""
    top = conn.execute("SELECT max(id) FROM legacy_product").fetchone()
    if top is None or top[0] is None:
        raise Skip
    start = rng.randint(1, int(top[0]))
    query = sql.SQL(
        "SELECT {row} FROM legacy_product WHERE id >= %s AND ({where}) ORDER BY id LIMIT 1{lock}"
    ).format(row=_ROW, where=where, lock=_FOR_UPDATE if lock else _NO_LOCK)
    for low in (start, 0):
        found = conn.execute(query, (low, *params)).fetchone()
        if found is not None:
            return as_row(found)
    raise Skip


def rows_of(conn: psycopg.Connection, sku: str, *, lock: bool = True) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT {row} FROM legacy_product WHERE sku = %s ORDER BY channel{lock}"
    ).format(row=_ROW, lock=_FOR_UPDATE if lock else _NO_LOCK)
    rows = conn.execute(query, (sku,)).fetchall()
    return [as_row(r) for r in rows]


def sku_rows(conn: psycopg.Connection, sku: str, *, lock: bool = True) -> list[tuple[str, str]]:
    return [(r["sku"], r["channel"]) for r in rows_of(conn, sku, lock=lock)]


def sku_where(
    conn: psycopg.Connection, rng: random.Random, wanted: Callable[[set[str]], bool]
) -> str:
    """A SKU whose set of channels satisfies `wanted`, its rows locked."""
    top = conn.execute("SELECT max(id) FROM legacy_product").fetchone()
    if top is None or top[0] is None:
        raise Skip
    for _ in range(4):
        low = rng.randint(1, int(top[0]))
        candidates = conn.execute(
            "SELECT DISTINCT sku FROM legacy_product WHERE id >= %s AND id < %s + 600 LIMIT 40",
            (low, low),
        ).fetchall()
        for (sku,) in candidates:
            have = {r["channel"] for r in rows_of(conn, sku)}
            if wanted(have):
                return str(sku)
    raise Skip


def random_price(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(100, 99_999)) / 100


def attributes(rng: random.Random, kind: Kind, channel: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"material": rng.choice(("canvas", "leather", "mesh", "wool"))}
    attrs["color" if channel == "US" else "colour"] = rng.choice(("Black", "Sand", "Navy"))
    if kind.sizes == "shoe":
        attrs[OWN_SIZE_KEY[channel]] = rng.randint(10, 26) / 2 + (33 if channel == "EU" else 0)
    elif kind.sizes == "letter":
        attrs[OWN_SIZE_KEY[channel]] = rng.choice(("XS", "S", "M", "L", "XL"))
    if channel == "US":
        attrs["weight_lb"] = round(rng.uniform(0.3, 4.0), 2)
    else:
        attrs["weight_g"] = rng.randint(150, 2000)
    return attrs


def new_row(rng: random.Random, sku: str, channel: str, kind: Kind) -> tuple[Any, ...]:
    return (
        sku,
        channel,
        f"{kind.name} {channel}",
        f"Chaos {kind.name} {rng.randint(1, 999)}",
        None if rng.random() < 0.2 else "Made for the fault-injection suite.",
        json.dumps(attributes(rng, kind, channel), ensure_ascii=False),
        random_price(rng),
        CHANNEL_CURRENCY[channel],
        None if rng.random() < 0.2 else rng.randint(0, 500),
        rng.random() < 0.8,
        "2024-01-01T00:00:00Z",
    )


def reinsert(rng: random.Random, row: dict[str, Any]) -> tuple[Any, ...]:
    """The same (sku, channel) back, as a new row with a new id and a new price."""
    return (
        row["sku"],
        row["channel"],
        row["product_type"],
        row["name"],
        row["description"],
        row["attributes"],
        random_price(rng),
        row["currency"],
        row["stock"],
        not row["published"],
        row["created_at"],
    )


def retype(product_type: str, channel: str) -> str:
    base = product_type.strip().rpartition(" ")[0]
    return f"{base} {channel}"


def resize(attributes: str, channel: str) -> str:
    """The row's attributes with its size under the new channel's own key."""
    attrs = json.loads(attributes)
    for key in [k for k in attrs if k in _SIZE_KEYS]:
        attrs[OWN_SIZE_KEY[channel]] = attrs.pop(key)
    return json.dumps(attrs, ensure_ascii=False)
