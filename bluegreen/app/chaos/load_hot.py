"""Hot-key bursts: single-row updates on one SKU at a set rate, from their own connection."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg
from pydantic import SecretStr

from bluegreen.app.chaos.load_common import LoadStats, Session
from bluegreen.app.chaos.load_rows import random_price, random_row, sku_rows


class HotKey:
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
        self._session = Session(dsn, stop, stats, autocommit=True)

    def run(self) -> None:
        try:
            while not self._stop.wait(self._rng.uniform(1.0, 4.0)):
                self._burst(self._rng.uniform(1.5, 3.0))
        finally:
            self._session.close()

    def _burst(self, seconds: float) -> None:
        target: list[tuple[str, str]] = []

        def pick(conn: psycopg.Connection) -> None:
            sku = random_row(conn, self._rng, lock=False)["sku"]
            target.extend(sku_rows(conn, sku, lock=False))

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
        price = random_price(self._rng)
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
