"""The legacy application at its most awkward: an adversarial but valid write load on blue.

Every row written is one the transform accepts (the channel's currency, the type's
channel suffix, the channel's own size key, a non-empty name, a price that fits
numeric(12,2), stock NULL or >= 0), so a dead letter always means a defect, never the
load. What it does, from a seeded RNG:

* a deck of scenario operations, every kind once per deck, shuffled (so each kind
  happens early and often): delete and re-insert of one (sku, channel) in one
  transaction and across two, rows moved to a new SKU, to an existing SKU that lacks
  the row's channel and to another channel, the US row deleted where GB exists, every
  channel of a SKU deleted at once and one by one, 7-12 KB descriptions followed by
  price-only updates (TOAST), unicode names, the largest price, NULL stock, primary key
  changes, new products, and plain price/stock updates and renames;
* hot-key bursts from a second connection: ~190 single-row updates per second on one
  SKU for a few seconds, every few seconds;
* one large transaction (20,000 rows by default) at a set moment.

Both connections ride through blue restarts (reconnect, go on); an operation counts
only once its last transaction committed. The `benign` profile keeps only the demo's
kind of traffic (price and stock updates, new products, deletes) for control runs.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.logs import get_logger
from schemas.catalog.seed import KINDS, Kind
from schemas.catalog.transform import CHANNEL_CURRENCY, MAX_PRICE, OWN_SIZE_KEY

CHANNELS = tuple(CHANNEL_CURRENCY)
_SIZE_KEYS = frozenset(OWN_SIZE_KEY.values())
_ROW = (
    "id, sku, channel, product_type, name, description, attributes::text, price, currency, "
    "stock, published, created_at"
)
_INSERT = (
    "INSERT INTO legacy_product (sku, channel, product_type, name, description, attributes, "
    "price, currency, stock, published, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, now())"
)
_UNICODE_NAMES = (
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
# The deck: how many of each operation one shuffled round holds.
ADVERSARIAL_DECK = {
    "price_stock_update": 6,
    "rename": 2,
    "insert_product": 3,
    "pk_change": 1,
    "delete_reinsert_same_tx": 2,
    "delete_reinsert_across_tx": 2,
    "move_to_new_sku": 2,
    "move_to_existing_sku": 2,
    "move_to_other_channel": 2,
    "delete_us_keep_gb": 1,
    "delete_sku_at_once": 1,
    "delete_sku_one_by_one": 1,
    "toast_description": 1,
    "unicode_name": 1,
    "max_price": 1,
    "null_stock": 1,
}
BENIGN_DECK = {"price_stock_update": 15, "insert_product": 3, "delete_row": 2}
# What a run's table must show happened (the adversarial profile).
REQUIRED_OPS = (
    *(op for op in ADVERSARIAL_DECK if op not in {"price_stock_update", "rename"}),
    "toast_price_only",
    "hot_key_update",
    "big_transaction",
)


class _Skip(Exception):  # noqa: N818 - control flow, not an error
    """No candidate row for this operation right now; try another."""


class _Session:
    """One blue connection that comes back after blue restarts."""

    def __init__(
        self, dsn: SecretStr, stop: threading.Event, stats: LoadStats, *, autocommit: bool = False
    ) -> None:
        self._dsn = dsn
        self._autocommit = autocommit
        self._stop = stop
        self._stats = stats
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection | None:
        while self._conn is None and not self._stop.is_set():
            try:
                self._conn = db.connect(self._dsn, autocommit=self._autocommit, connect_timeout=3)
            except psycopg.OperationalError:
                self._stop.wait(0.3)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._stats.reconnects += 1

    def transaction(self, work: Callable[[psycopg.Connection], None]) -> bool:
        """Run `work` in one transaction; True once it committed."""
        conn = self._connect()
        if conn is None:
            return False
        try:
            work(conn)
        except _Skip:
            conn.rollback()
            return False
        except psycopg.Error as exc:
            if conn.broken or isinstance(exc, psycopg.OperationalError):
                self._drop()
            else:
                conn.rollback()
                self._stats.note_error(exc)
            return False
        try:
            conn.commit()
        except psycopg.Error:
            self._stats.commit_unknown += 1  # it may or may not have committed: blue decides
            self._drop()
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class LoadStats:
    ops: Counter[str] = field(default_factory=Counter)
    rows_changed: int = 0
    failed: int = 0
    commit_unknown: int = 0
    reconnects: int = 0
    hot_bursts: int = 0
    hot_rates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, op: str, rows: int = 1) -> None:
        with self._lock:
            self.ops[op] += 1
            self.rows_changed += rows

    def note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": dict(sorted(self.ops.items())),
            "rows_changed": self.rows_changed,
            "failed_transactions": self.failed,
            "commit_unknown": self.commit_unknown,
            "reconnects": self.reconnects,
            "hot_key_bursts": self.hot_bursts,
            "hot_key_rate_per_s": round(sum(self.hot_rates) / len(self.hot_rates), 1)
            if self.hot_rates
            else 0.0,
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class LoadOptions:
    profile: str = "adversarial"  # or "benign"
    ops_per_s: float = 40.0  # scenario operations per second (each 1-4 transactions)
    hot_rate: float = 190.0  # updates per second on the hot SKU during a burst
    big_rows: int = 20_000  # rows of the one large transaction (0: none)
    big_at_s: float = 10.0  # when it runs, seconds after the start


class BlueLoad:
    """The scenario thread and the hot-key thread, sharing one stop flag and one tally."""

    def __init__(self, dsn: SecretStr, seed: int, options: LoadOptions) -> None:
        self.stop = threading.Event()
        self.stats = LoadStats()
        self.options = options
        deck = ADVERSARIAL_DECK if options.profile == "adversarial" else BENIGN_DECK
        self._scenario = _Scenario(
            dsn, seed=seed, options=options, deck=deck, stop=self.stop, stats=self.stats
        )
        self._threads = [
            threading.Thread(target=self._scenario.run, name="chaos-load", daemon=True)
        ]
        if options.profile == "adversarial":
            hot = _HotKey(dsn, seed, options.hot_rate, self.stop, self.stats)
            self._threads.append(threading.Thread(target=hot.run, name="chaos-hot", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self, timeout_s: float = 60.0) -> None:
        """Stop writing; wait (bounded) for the transactions in flight."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def missing_ops(self) -> list[str]:
        if self.options.profile != "adversarial":
            return []
        required = [op for op in REQUIRED_OPS if op != "big_transaction" or self.options.big_rows]
        return [op for op in required if not self.stats.ops.get(op)]


class _HotKey:
    """Bursts of single-row updates on one SKU at `rate` per second."""

    def __init__(
        self,
        dsn: SecretStr,
        seed: int,
        rate: float,
        stop: threading.Event,
        stats: LoadStats,
    ) -> None:
        self._rng = random.Random(f"hot-{seed}")  # noqa: S311 - load generation
        self._rate = rate
        self._stop = stop
        self._stats = stats
        # One statement per update, autocommit: one round trip each, so the rate holds.
        self._session = _Session(dsn, stop, stats, autocommit=True)

    def run(self) -> None:
        try:
            while not self._stop.wait(self._rng.uniform(1.0, 4.0)):
                self._burst(self._rng.uniform(1.5, 3.0))
        finally:
            self._session.close()

    def _burst(self, seconds: float) -> None:
        target: list[tuple[str, str]] = []

        def pick(conn: psycopg.Connection) -> None:
            sku = _random_row(conn, self._rng, lock=False)["sku"]
            target.extend(_sku_rows(conn, sku, lock=False))

        if not self._session.transaction(pick) or not target:
            return
        self._stats.hot_bursts += 1
        started = time.monotonic()
        done = 0
        while not self._stop.is_set() and time.monotonic() - started < seconds:
            sku, channel = target[done % len(target)]
            if self._session.transaction(self._update(sku, channel, done)):
                self._stats.count("hot_key_update")
                done += 1
            ahead = done / self._rate - (time.monotonic() - started)
            if ahead > 0:
                self._stop.wait(ahead)
        self._stats.hot_rates.append(done / max(time.monotonic() - started, 1e-6))

    def _update(self, sku: str, channel: str, n: int) -> Callable[[psycopg.Connection], None]:
        price = _price(self._rng)
        stock = self._rng.randint(0, 900)

        def work(conn: psycopg.Connection) -> None:
            if n % 10 == 9:  # now and then a shared field too: the product changes as well
                conn.execute(
                    "UPDATE legacy_product SET name = left(name, 200) || %s, price = %s, "
                    "updated_at = now() WHERE sku = %s AND channel = %s",
                    (f" #{n}", price, sku, channel),
                )
                return
            conn.execute(
                "UPDATE legacy_product SET price = %s, stock = %s, updated_at = now() "
                "WHERE sku = %s AND channel = %s",
                (price, stock, sku, channel),
            )

        return work


class _Scenario:
    """The deck of scenario operations, paced at `ops_per_s`, and the large transaction."""

    def __init__(
        self,
        dsn: SecretStr,
        *,
        seed: int,
        options: LoadOptions,
        deck: dict[str, int],
        stop: threading.Event,
        stats: LoadStats,
    ) -> None:
        self._rng = random.Random(f"scenario-{seed}")  # noqa: S311 - load generation
        self._options = options
        self._deck = [op for op, copies in deck.items() for _ in range(copies)]
        self._stop = stop
        self._stats = stats
        self._session = _Session(dsn, stop, stats)
        self._new = 0
        self._log = get_logger(component="chaos-load")

    def run(self) -> None:
        started = time.monotonic()
        big_pending = self._options.profile == "adversarial" and self._options.big_rows > 0
        done = 0
        try:
            while not self._stop.is_set():
                hand = list(self._deck)
                self._rng.shuffle(hand)
                for op in hand:
                    if self._stop.is_set():
                        break
                    if big_pending and time.monotonic() - started >= self._options.big_at_s:
                        big_pending = not self._big_transaction()
                    getattr(self, f"_op_{op}")()
                    done += 1
                    ahead = done / self._options.ops_per_s - (time.monotonic() - started)
                    if ahead > 0:
                        self._stop.wait(ahead)
        except Exception as exc:
            self._log.exception("the load stopped", error=str(exc))
            raise
        finally:
            self._session.close()

    # -- helpers --------------------------------------------------------------------------------

    def _tx(self, op: str | None, work: Callable[[psycopg.Connection], int | None]) -> bool:
        """One transaction; counts `op` (with the rows `work` returns) once it committed."""
        rows: list[int] = []

        def wrapped(conn: psycopg.Connection) -> None:
            rows.append(work(conn) or 1)

        committed = self._session.transaction(wrapped)
        if committed and op is not None:
            self._stats.count(op, rows[0])
        return committed

    def _new_sku(self, prefix: str) -> str:
        self._new += 1
        return f"{prefix}-{self._new:07d}"

    # -- the operations -------------------------------------------------------------------------

    def _op_price_stock_update(self) -> None:
        def work(conn: psycopg.Connection) -> int:
            ids = [_random_row(conn, self._rng)["id"] for _ in range(self._rng.randint(1, 3))]
            cur = conn.execute(
                "UPDATE legacy_product SET price = %s, stock = coalesce(stock, 0) + 1, "
                "updated_at = now() WHERE id = ANY(%s)",
                (_price(self._rng), ids),
            )
            return cur.rowcount

        self._tx("price_stock_update", work)

    def _op_rename(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET name = left(name, 240) || ' v2', updated_at = now() "
                "WHERE id = %s",
                (row["id"],),
            )

        self._tx("rename", work)

    def _op_insert_product(self) -> None:
        def work(conn: psycopg.Connection) -> int:
            sku = self._new_sku("CX")
            kind = self._rng.choice(KINDS)
            channels = [c for c in CHANNELS if self._rng.random() < 0.7] or ["GB"]
            for channel in channels:
                conn.execute(_INSERT, _new_row(self._rng, sku, channel, kind))
            return len(channels)

        self._tx("insert_product", work)

    def _op_delete_row(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))

        self._tx("delete_row", work)

    def _op_pk_change(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET id = nextval(pg_get_serial_sequence("
                "'legacy_product', 'id')), updated_at = now() WHERE id = %s",
                (row["id"],),
            )

        self._tx("pk_change", work)

    def _op_delete_reinsert_same_tx(self) -> None:
        def work(conn: psycopg.Connection) -> int:
            row = _random_row(conn, self._rng)
            conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))
            conn.execute(_INSERT, _reinsert(self._rng, row))
            return 2

        self._tx("delete_reinsert_same_tx", work)

    def _op_delete_reinsert_across_tx(self) -> None:
        kept: list[dict[str, Any]] = []

        def delete(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute("DELETE FROM legacy_product WHERE id = %s", (row["id"],))
            kept.append(row)

        if not self._tx(None, delete):
            return
        self._stop.wait(self._rng.uniform(0.0, 0.3))

        def insert(conn: psycopg.Connection) -> int:
            conn.execute(_INSERT, _reinsert(self._rng, kept[0]))
            return 2

        self._tx("delete_reinsert_across_tx", insert)

    def _op_move_to_new_sku(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET sku = %s, updated_at = now() WHERE id = %s",
                (self._new_sku("MV"), row["id"]),
            )

        self._tx("move_to_new_sku", work)

    def _op_move_to_existing_sku(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            channel = self._rng.choice(CHANNELS)
            target = _sku_where(conn, self._rng, lambda have: channel not in have and bool(have))
            row = _random_row(conn, self._rng, "channel = %s AND sku <> %s", (channel, target))
            conn.execute(
                "UPDATE legacy_product SET sku = %s, updated_at = now() WHERE id = %s",
                (target, row["id"]),
            )

        self._tx("move_to_existing_sku", work)

    def _op_move_to_other_channel(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            sku = _sku_where(conn, self._rng, lambda have: 0 < len(have) < len(CHANNELS))
            rows = _rows_of(conn, sku)
            have = {r["channel"] for r in rows}
            row = self._rng.choice(rows)
            channel = self._rng.choice([c for c in CHANNELS if c not in have])
            conn.execute(
                "UPDATE legacy_product SET channel = %s, currency = %s, product_type = %s, "
                "attributes = %s::jsonb, updated_at = now() WHERE id = %s",
                (
                    channel,
                    CHANNEL_CURRENCY[channel],
                    _retype(row["product_type"], channel),
                    _resize(row["attributes"], channel),
                    row["id"],
                ),
            )

        self._tx("move_to_other_channel", work)

    def _op_delete_us_keep_gb(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            sku = _sku_where(conn, self._rng, lambda have: {"US", "GB"} <= have)
            conn.execute("DELETE FROM legacy_product WHERE sku = %s AND channel = 'US'", (sku,))

        self._tx("delete_us_keep_gb", work)

    def _op_delete_sku_at_once(self) -> None:
        def work(conn: psycopg.Connection) -> int:
            sku = _sku_where(conn, self._rng, lambda have: len(have) >= 2)
            return conn.execute("DELETE FROM legacy_product WHERE sku = %s", (sku,)).rowcount

        self._tx("delete_sku_at_once", work)

    def _op_delete_sku_one_by_one(self) -> None:
        found: list[tuple[str, str]] = []

        def pick(conn: psycopg.Connection) -> None:
            sku = _sku_where(conn, self._rng, lambda have: len(have) >= 2)
            found.extend(_sku_rows(conn, sku))

        if not self._tx(None, pick):
            return
        self._rng.shuffle(found)
        for sku, channel in found:

            def delete(conn: psycopg.Connection, sku: str = sku, channel: str = channel) -> None:
                conn.execute(
                    "DELETE FROM legacy_product WHERE sku = %s AND channel = %s", (sku, channel)
                )

            if not self._tx(None, delete):
                return
        self._stats.count("delete_sku_one_by_one", len(found))

    def _op_toast_description(self) -> None:
        size = self._rng.randint(7 * 1024, 12 * 1024)
        raw = size // 2 + 1  # random bytes, as hex: compresses poorly, so it is TOASTed out of line
        blob = self._rng.getrandbits(8 * raw).to_bytes(raw, "big").hex()
        text = "Lot sheet: " + " ".join(blob[i : i + 16] for i in range(0, len(blob), 16))
        chosen: list[int] = []

        def describe(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET description = %s, updated_at = now() WHERE id = %s",
                (text[:size], row["id"]),
            )
            chosen.append(row["id"])

        if not self._tx("toast_description", describe):
            return
        for _ in range(self._rng.randint(1, 3)):
            price = _price(self._rng)

            def price_only(conn: psycopg.Connection, price: Decimal = price) -> None:
                conn.execute(
                    "UPDATE legacy_product SET price = %s WHERE id = %s", (price, chosen[0])
                )

            self._tx("toast_price_only", price_only)

    def _op_unicode_name(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET name = %s, updated_at = now() WHERE id = %s",
                (self._rng.choice(_UNICODE_NAMES), row["id"]),
            )

        self._tx("unicode_name", work)

    def _op_max_price(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET price = %s, updated_at = now() WHERE id = %s",
                (MAX_PRICE, row["id"]),
            )

        self._tx("max_price", work)

    def _op_null_stock(self) -> None:
        def work(conn: psycopg.Connection) -> None:
            row = _random_row(conn, self._rng)
            conn.execute(
                "UPDATE legacy_product SET stock = NULL, updated_at = now() WHERE id = %s",
                (row["id"],),
            )

        self._tx("null_stock", work)

    def _big_transaction(self) -> bool:
        rows = self._options.big_rows
        self._log.debug("large transaction", rows=rows)

        def work(conn: psycopg.Connection) -> int:
            top = conn.execute("SELECT count(*) FROM legacy_product").fetchone()
            offset = self._rng.randint(0, max(0, int(top[0] if top else 0) - rows))
            return conn.execute(
                "UPDATE legacy_product SET "
                "price = CASE WHEN price < 1000000 THEN price + 0.01 ELSE 0.99 END, "
                "stock = stock + 1, updated_at = now() "
                "WHERE id IN (SELECT id FROM legacy_product ORDER BY id LIMIT %s OFFSET %s)",
                (rows, offset),
            ).rowcount

        return self._tx("big_transaction", work)


# -- picking rows and making valid ones -----------------------------------------------------------


_ROW_NAMES = tuple(c.strip().split("::")[0] for c in _ROW.split(","))


def _as_row(values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_ROW_NAMES, values, strict=True))


def _random_row(
    conn: psycopg.Connection,
    rng: random.Random,
    where: str = "TRUE",
    params: tuple[Any, ...] = (),
    *,
    lock: bool = True,
) -> dict[str, Any]:
    """A random live row (the first at or after a random id), locked for this transaction."""
    top = conn.execute("SELECT max(id) FROM legacy_product").fetchone()
    if top is None or top[0] is None:
        raise _Skip
    start = rng.randint(1, int(top[0]))
    suffix = " FOR UPDATE" if lock else ""
    for low in (start, 0):
        found = conn.execute(
            f"SELECT {_ROW} FROM legacy_product WHERE id >= %s AND ({where}) "
            f"ORDER BY id LIMIT 1{suffix}",
            (low, *params),
        ).fetchone()
        if found is not None:
            return _as_row(found)
    raise _Skip


def _rows_of(conn: psycopg.Connection, sku: str, *, lock: bool = True) -> list[dict[str, Any]]:
    suffix = " FOR UPDATE" if lock else ""
    rows = conn.execute(
        f"SELECT {_ROW} FROM legacy_product WHERE sku = %s ORDER BY channel{suffix}", (sku,)
    ).fetchall()
    return [_as_row(r) for r in rows]


def _sku_rows(conn: psycopg.Connection, sku: str, *, lock: bool = True) -> list[tuple[str, str]]:
    return [(r["sku"], r["channel"]) for r in _rows_of(conn, sku, lock=lock)]


def _sku_where(
    conn: psycopg.Connection, rng: random.Random, wanted: Callable[[set[str]], bool]
) -> str:
    """A SKU whose set of channels satisfies `wanted`, its rows locked."""
    top = conn.execute("SELECT max(id) FROM legacy_product").fetchone()
    if top is None or top[0] is None:
        raise _Skip
    for _ in range(4):
        low = rng.randint(1, int(top[0]))
        candidates = conn.execute(
            "SELECT DISTINCT sku FROM legacy_product WHERE id >= %s AND id < %s + 600 LIMIT 40",
            (low, low),
        ).fetchall()
        for (sku,) in candidates:
            have = {r["channel"] for r in _rows_of(conn, sku)}
            if wanted(have):
                return str(sku)
    raise _Skip


def _price(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(100, 99_999)) / 100


def _attributes(rng: random.Random, kind: Kind, channel: str) -> dict[str, Any]:
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


def _new_row(rng: random.Random, sku: str, channel: str, kind: Kind) -> tuple[Any, ...]:
    return (
        sku,
        channel,
        f"{kind.name} {channel}",
        f"Chaos {kind.name} {rng.randint(1, 999)}",
        None if rng.random() < 0.2 else "Made for the fault-injection suite.",
        json.dumps(_attributes(rng, kind, channel), ensure_ascii=False),
        _price(rng),
        CHANNEL_CURRENCY[channel],
        None if rng.random() < 0.2 else rng.randint(0, 500),
        rng.random() < 0.8,
        "2024-01-01T00:00:00Z",
    )


def _reinsert(rng: random.Random, row: dict[str, Any]) -> tuple[Any, ...]:
    """The same (sku, channel) back, as a new row with a new id and a new price."""
    return (
        row["sku"],
        row["channel"],
        row["product_type"],
        row["name"],
        row["description"],
        row["attributes"],
        _price(rng),
        row["currency"],
        row["stock"],
        not row["published"],
        row["created_at"],
    )


def _retype(product_type: str, channel: str) -> str:
    base = product_type.strip().rpartition(" ")[0]
    return f"{base} {channel}"


def _resize(attributes: str, channel: str) -> str:
    """The row's attributes with its size under the new channel's own key."""
    attrs = json.loads(attributes)
    for key in [k for k in attrs if k in _SIZE_KEYS]:
        attrs[OWN_SIZE_KEY[channel]] = attrs.pop(key)
    return json.dumps(attrs, ensure_ascii=False)
