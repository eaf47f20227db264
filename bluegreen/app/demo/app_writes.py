"""The demo's application writers: blue-version and green-version clients through the
traffic router, as role bluegreen_app.

While blue owns writes, the blue-version client's transactions run (legacy rows);
once writes are on green, the green-version client's (the unified model). Every new
SKU a write creates is remembered with the color that acknowledged it, so the demo
can count acknowledged writes missing from the final state of both colors.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg

from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from cutover import app_roles
from cutover.router import TrafficRouter
from cutover.write_gate import HoldStats

CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}


def app_router(settings: Settings, pool_size: int = 4) -> TrafficRouter:
    return TrafficRouter(
        settings.control_dsn,
        {"blue": settings.blue_dsn, "green": settings.green_dsn},
        write_dsns={
            "blue": app_roles.as_role(settings.blue_dsn),
            "green": app_roles.as_role(settings.green_dsn),
        },
        pool_size=pool_size,
    )


class AppWriteLoad(threading.Thread):
    """About `rate` row changes per second through one traffic router, in small
    transactions: price and stock updates of one SKU's listings, new products."""

    def __init__(self, settings: Settings, rate: float, skus: list[str], seed: int = 11) -> None:
        super().__init__(name="app-write-load", daemon=True)
        self.router = app_router(settings)
        self._rate = rate
        self._skus = skus
        self._rng = random.Random(seed)  # noqa: S311 - load generation, not cryptography
        self.stop = threading.Event()
        self.total = 0
        self.changes = 0
        self.failed = 0
        self.by_color: dict[str, int] = {}  # write transactions acknowledged per color
        self.changes_by_color: dict[str, int] = {}  # rows they changed
        self.created: dict[str, str] = {}  # new SKU -> the color that acknowledged it
        self.errors: list[str] = []

    @property
    def holds(self) -> HoldStats:
        return self.router.hold_stats

    def run(self) -> None:
        log = get_logger(component="app-write-load")
        started = time.monotonic()
        while not self.stop.is_set():
            self.total += 1
            try:
                with self.router.connection("write") as (color, conn):
                    created, rows = self._transaction(color, conn)
                self.by_color[color] = self.by_color.get(color, 0) + 1
                self.changes += max(1, rows)
                self.changes_by_color[color] = self.changes_by_color.get(color, 0) + rows
                if created is not None:
                    self.created[created] = color
            except (psycopg.Error, BluegreenError) as exc:  # counted, and shown
                self.failed += 1
                if len(self.errors) < 10:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("write failed", error=str(exc).strip()[:200])
            ahead = self.changes / self._rate - (time.monotonic() - started)
            if ahead > 0:
                self.stop.wait(ahead)

    def close(self) -> None:
        self.stop.set()
        self.join(30)
        self.router.close()

    def _transaction(self, color: str, conn: psycopg.Connection) -> tuple[str | None, int]:
        """(the new SKU it created or None, rows changed)."""
        roll = self._rng.random()
        sku = self._rng.choice(self._skus)
        if roll < 0.85:
            if color == "blue":
                cur = conn.execute(
                    "UPDATE legacy_product SET price = price + 0.01, "
                    "stock = coalesce(stock, 0) + 1, updated_at = now() WHERE sku = %s",
                    (sku,),
                )
            else:
                cur = conn.execute(
                    "UPDATE catalog.channel_listing SET price = price + 0.01, stock = stock + 1, "
                    "updated_at = now() WHERE sku = %s",
                    (sku,),
                )
                # The model's invariant: a product's updated_at is its newest listing's
                # (what the transform derives from blue's rows).
                conn.execute("UPDATE catalog.product SET updated_at = now() WHERE sku = %s", (sku,))
            return None, cur.rowcount
        sku = f"APP-{color[0].upper()}-{self.total:07d}"
        channel = self._rng.choice(list(CURRENCY))
        if color == "blue":
            conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
                "attributes, price, currency, stock, published) VALUES (%s, %s, %s, "
                "'Demo Runner', 'Fresh in the catalog.', '{\"color\": \"Black\"}', 49.99, %s, "
                "10, true)",
                (sku, channel, f"Sneaker {channel}", CURRENCY[channel]),
            )
            return sku, 1
        conn.execute(
            "INSERT INTO catalog.product (sku, product_type, name, description, attributes, "
            "primary_channel, created_at, updated_at, src_lsn, src_seq) VALUES (%s, 'Sneaker', "
            "'Demo Runner', 'Fresh in the catalog.', '{\"color\": \"Black\"}', %s, now(), now(), "
            "0, 0)",
            (sku, channel),
        )
        conn.execute(
            "INSERT INTO catalog.channel_listing (sku, channel, price, currency, stock, "
            "published, created_at, updated_at, src_lsn, src_seq) VALUES (%s, %s, 49.99, %s, 10, "
            "true, now(), now(), 0, 0)",
            (sku, channel, CURRENCY[channel]),
        )
        return sku, 2


def missing(settings: Settings, created: dict[str, str]) -> list[str]:
    """Acknowledged new SKUs absent from blue or from green: lost writes."""
    skus = sorted(created)
    found: dict[str, set[str]] = {}
    for color, dsn, table in (
        ("blue", settings.blue_dsn, "legacy_product"),
        ("green", settings.green_dsn, "catalog.product"),
    ):
        query = (
            "SELECT sku FROM legacy_product WHERE sku = ANY(%s)"
            if table == "legacy_product"
            else "SELECT sku FROM catalog.product WHERE sku = ANY(%s)"
        )
        with psycopg.connect(dsn.get_secret_value()) as conn:
            found[color] = {str(r[0]) for r in conn.execute(query, (skus,)).fetchall()}
    return [s for s in skus if s not in found["blue"] or s not in found["green"]]
