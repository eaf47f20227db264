"""A concurrent blue writer for convergence tests: the legacy app, changing its catalog."""

from __future__ import annotations

import random
import threading
import time

import psycopg

from bluegreen.core import db
from bluegreen.core.config import Settings

CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}


class BlueWriter(threading.Thread):
    """Small transactions: price and stock updates, renames, new rows, deletes, key moves."""

    def __init__(
        self,
        settings: Settings,
        seed: int = 1,
        pause_s: float = 0.002,
        *,
        ride_through_restarts: bool = False,
    ) -> None:
        super().__init__(daemon=True, name="blue-writer")
        self.settings = settings
        self.rng = random.Random(seed)
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.ride_through_restarts = ride_through_restarts
        self.transactions = 0
        self.reconnects = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    with db.connect(self.settings.blue_dsn, connect_timeout=5) as conn:
                        while not self.stop.is_set():
                            self._one(conn)
                            conn.commit()
                            self.transactions += 1
                            time.sleep(self.pause_s)
                except psycopg.OperationalError:
                    if not self.ride_through_restarts:
                        raise
                    self.reconnects += 1
                    self.stop.wait(0.2)  # blue restarts: the application retries
        except BaseException as exc:
            self.error = exc

    def _one(self, conn: psycopg.Connection) -> None:
        rng = self.rng
        top = conn.execute("SELECT max(id) FROM legacy_product").fetchone()
        high = int(top[0] or 1) if top else 1
        ids = [rng.randint(1, high) for _ in range(rng.randint(1, 4))]
        action = rng.random()
        if action < 0.55:
            conn.execute(
                "UPDATE legacy_product SET price = price + 1, stock = coalesce(stock, 0) + 1, "
                "updated_at = now() WHERE id = ANY(%s)",
                (ids,),
            )
        elif action < 0.65:
            conn.execute(
                "UPDATE legacy_product SET name = name || ' v2', updated_at = now() "
                "WHERE id = ANY(%s)",
                (ids,),
            )
        elif action < 0.78:
            channel = rng.choice(list(CURRENCY))
            conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
                "attributes, price, currency, stock, published) VALUES "
                "(%s, %s, %s, 'Fresh', 'New in', '{\"color\": \"Red\"}', 42.00, %s, 5, true) "
                "ON CONFLICT (sku, channel) DO NOTHING",
                (f"NEW-{rng.randint(1, 400)}", channel, f"Boot {channel}", CURRENCY[channel]),
            )
        elif action < 0.90:
            conn.execute("DELETE FROM legacy_product WHERE id = ANY(%s)", (ids[:1],))
        elif action < 0.95:
            # A new primary key for a row (the CDC producer emits a delete and a create).
            conn.execute(
                "UPDATE legacy_product SET id = nextval(pg_get_serial_sequence("
                "'legacy_product', 'id')) WHERE id = %s",
                (ids[0],),
            )
        else:
            # The row moves to another SKU (a delete of the old listing, an upsert of the new).
            conn.execute(
                "UPDATE legacy_product SET sku = sku || '-M' WHERE id = %s AND length(sku) < 28 "
                "AND NOT EXISTS (SELECT 1 FROM legacy_product o WHERE o.sku = "
                "legacy_product.sku || '-M' AND o.channel = legacy_product.channel)",
                (ids[0],),
            )
