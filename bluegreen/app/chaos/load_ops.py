"""The scenario deck's operations, one function each, every one a valid change of blue.

Each runs its transactions through ``Scenario.tx``, which counts the operation only
once its last transaction committed; a picker finding no fitting row skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from bluegreen.app.chaos.load_rows import (
    CHANNELS,
    INSERT,
    new_row,
    random_price,
    random_row,
    reinsert,
    resize,
    retype,
    rows_of,
    sku_rows,
    sku_where,
)
from schemas.catalog.seed import KINDS
from schemas.catalog.transform import CHANNEL_CURRENCY, MAX_PRICE

if TYPE_CHECKING:
    from bluegreen.app.chaos.load_scenario import Scenario

UNICODE_NAMES = (
    "Ünïcødé Trail Runner — Größe 42 ✓",
    "スニーカー 軽量モデル 👟",
    "Кроссовки «Север» №7",
    "حذاء رياضي خفيف",
    "נעל ריצה קלה \u200f(גרסה 2)",  # with a right-to-left mark
    "Zapatilla niño Ñandú 🇪🇸",
    "e\u0301te\u0301 combining accents",
    "Ünïcødé boot 🥾🧦 ∑≠∞ \U0001d518",  # and a character outside the BMP
    "Σανδάλι Ωμέγα ΑΒΓ",
    "운동화 한정판 ⭐",
)
_OTHER_SKU_IN_CHANNEL = sql.SQL("channel = %s AND sku <> %s")


def price_stock_update(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> int:
        ids = [random_row(conn, s.rng)["id"] for _ in range(s.rng.randint(1, 3))]
        cur = conn.execute(
            "UPDATE legacy_product SET price = %s, stock = coalesce(stock, 0) + 1, "
            "updated_at = now() WHERE id = ANY(%s)",
            (random_price(s.rng), ids),
        )
        return cur.rowcount

    s.tx("price_stock_update", work)


def rename(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET name = left(name, 240) || ' v2', updated_at = now() "
            "WHERE id = %s",
            (row["id"],),
        )

    s.tx("rename", work)


def insert_product(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> int:
        sku = s.new_sku("CX")
        kind = s.rng.choice(KINDS)
        channels = [c for c in CHANNELS if s.rng.random() < 0.7] or ["GB"]
        for channel in channels:
            conn.execute(INSERT, new_row(s.rng, sku, channel, kind))
        return len(channels)

    s.tx("insert_product", work)


def delete_row(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))

    s.tx("delete_row", work)


def pk_change(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET id = nextval(pg_get_serial_sequence("
            "'legacy_product', 'id')), updated_at = now() WHERE id = %s",
            (row["id"],),
        )

    s.tx("pk_change", work)


def delete_reinsert_same_tx(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> int:
        row = random_row(conn, s.rng)
        conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))
        conn.execute(INSERT, reinsert(s.rng, row))
        return 2

    s.tx("delete_reinsert_same_tx", work)


def delete_reinsert_across_tx(s: Scenario) -> None:
    kept: list[dict[str, Any]] = []

    def delete(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))
        kept.append(row)

    if not s.tx(None, delete):
        return
    s.stop.wait(s.rng.uniform(0.0, 0.3))

    def insert(conn: psycopg.Connection) -> int:
        conn.execute(INSERT, reinsert(s.rng, kept[0]))
        return 2

    s.tx("delete_reinsert_across_tx", insert)


def move_to_new_sku(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET sku = %s, updated_at = now() WHERE id = %s",
            (s.new_sku("MV"), row["id"]),
        )

    s.tx("move_to_new_sku", work)


def move_to_existing_sku(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        channel = s.rng.choice(CHANNELS)
        target = sku_where(conn, s.rng, lambda have: channel not in have and bool(have))
        row = random_row(conn, s.rng, _OTHER_SKU_IN_CHANNEL, (channel, target))
        conn.execute(
            "UPDATE legacy_product SET sku = %s, updated_at = now() WHERE id = %s",
            (target, row["id"]),
        )

    s.tx("move_to_existing_sku", work)


def move_to_other_channel(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        sku = sku_where(conn, s.rng, lambda have: 0 < len(have) < len(CHANNELS))
        rows = rows_of(conn, sku)
        have = {r["channel"] for r in rows}
        row = s.rng.choice(rows)
        channel = s.rng.choice([c for c in CHANNELS if c not in have])
        conn.execute(
            "UPDATE legacy_product SET channel = %s, currency = %s, product_type = %s, "
            "attributes = %s::jsonb, updated_at = now() WHERE id = %s",
            (
                channel,
                CHANNEL_CURRENCY[channel],
                retype(row["product_type"], channel),
                resize(row["attributes"], channel),
                row["id"],
            ),
        )

    s.tx("move_to_other_channel", work)


def delete_us_keep_gb(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        sku = sku_where(conn, s.rng, lambda have: {"US", "GB"} <= have)
        conn.execute("DELETE FROM legacy_product WHERE sku = %s AND channel = 'US'", (sku,))

    s.tx("delete_us_keep_gb", work)


def delete_sku_at_once(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> int:
        sku = sku_where(conn, s.rng, lambda have: len(have) >= 2)
        return conn.execute("DELETE FROM legacy_product WHERE sku = %s", (sku,)).rowcount

    s.tx("delete_sku_at_once", work)


def delete_sku_one_by_one(s: Scenario) -> None:
    found: list[tuple[str, str]] = []

    def pick(conn: psycopg.Connection) -> None:
        sku = sku_where(conn, s.rng, lambda have: len(have) >= 2)
        found.extend(sku_rows(conn, sku))

    if not s.tx(None, pick):
        return
    s.rng.shuffle(found)
    for sku, channel in found:

        def delete(conn: psycopg.Connection, sku: str = sku, channel: str = channel) -> None:
            conn.execute(
                "DELETE FROM legacy_product WHERE sku = %s AND channel = %s", (sku, channel)
            )

        if not s.tx(None, delete):
            return
    s.stats.count("delete_sku_one_by_one", len(found))


def toast_description(s: Scenario) -> None:
    size = s.rng.randint(7 * 1024, 12 * 1024)
    raw = size // 2 + 1  # random bytes, as hex: compresses poorly, so it is TOASTed out of line
    blob = s.rng.getrandbits(8 * raw).to_bytes(raw, "big").hex()
    text = "Lot sheet: " + " ".join(blob[i : i + 16] for i in range(0, len(blob), 16))
    chosen: list[int] = []

    def describe(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET description = %s, updated_at = now() WHERE id = %s",
            (text[:size], row["id"]),
        )
        chosen.append(row["id"])

    if not s.tx("toast_description", describe):
        return
    for _ in range(s.rng.randint(1, 3)):
        price = random_price(s.rng)

        def price_only(conn: psycopg.Connection, price: Decimal = price) -> None:
            conn.execute("UPDATE legacy_product SET price = %s WHERE id = %s", (price, chosen[0]))

        s.tx("toast_price_only", price_only)


def unicode_name(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET name = %s, updated_at = now() WHERE id = %s",
            (s.rng.choice(UNICODE_NAMES), row["id"]),
        )

    s.tx("unicode_name", work)


def max_price(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET price = %s, updated_at = now() WHERE id = %s",
            (MAX_PRICE, row["id"]),
        )

    s.tx("max_price", work)


def null_stock(s: Scenario) -> None:
    def work(conn: psycopg.Connection) -> None:
        row = random_row(conn, s.rng)
        conn.execute(
            "UPDATE legacy_product SET stock = NULL, updated_at = now() WHERE id = %s",
            (row["id"],),
        )

    s.tx("null_stock", work)


# The deck's operations by name.
OPS: dict[str, Callable[[Scenario], None]] = {
    "price_stock_update": price_stock_update,
    "rename": rename,
    "insert_product": insert_product,
    "delete_row": delete_row,
    "pk_change": pk_change,
    "delete_reinsert_same_tx": delete_reinsert_same_tx,
    "delete_reinsert_across_tx": delete_reinsert_across_tx,
    "move_to_new_sku": move_to_new_sku,
    "move_to_existing_sku": move_to_existing_sku,
    "move_to_other_channel": move_to_other_channel,
    "delete_us_keep_gb": delete_us_keep_gb,
    "delete_sku_at_once": delete_sku_at_once,
    "delete_sku_one_by_one": delete_sku_one_by_one,
    "toast_description": toast_description,
    "unicode_name": unicode_name,
    "max_price": max_price,
    "null_stock": null_stock,
}
