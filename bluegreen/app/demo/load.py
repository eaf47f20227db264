"""Live load for the demo: the legacy application keeps writing to blue, and
application instances keep reading through the read router."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import psycopg

from bluegreen.control import ShadowCounts
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from cutover.router import ReadRouter
from schemas.catalog import CATALOG

CURRENCY = {"US": "USD", "GB": "GBP", "EU": "EUR"}


class WriteLoad(threading.Thread):
    """About `rate` changes per second on blue: price and stock updates, new products,
    deletes, in small transactions."""

    def __init__(self, settings: Settings, rate: float, seed: int = 11) -> None:
        super().__init__(name="write-load", daemon=True)
        self._settings = settings
        self._rate = rate
        self._rng = random.Random(seed)  # noqa: S311 - load generation, not cryptography
        self.stop = threading.Event()
        self.changes = 0
        self.errors = 0
        self._created = 0

    def run(self) -> None:
        log = get_logger(component="write-load")
        started = time.monotonic()
        with db.connect(self._settings.blue_dsn) as conn:
            high = int(conn.execute("SELECT max(id) FROM legacy_product").fetchone()[0] or 1)  # type: ignore[index]
            while not self.stop.is_set():
                try:
                    self.changes += self._transaction(conn, high)
                    conn.commit()
                except psycopg.Error as exc:
                    conn.rollback()
                    self.errors += 1
                    log.warning("write failed", error=str(exc).strip()[:200])
                ahead = self.changes / self._rate - (time.monotonic() - started)
                if ahead > 0:
                    self.stop.wait(ahead)

    def _transaction(self, conn: psycopg.Connection, high: int) -> int:
        roll = self._rng.random()
        if roll < 0.75:
            ids = [self._rng.randint(1, high) for _ in range(3)]
            cur = conn.execute(
                "UPDATE legacy_product SET price = price + 0.01, stock = coalesce(stock, 0) + 1, "
                "updated_at = now() WHERE id = ANY(%s)",
                (ids,),
            )
            return cur.rowcount
        if roll < 0.9:
            self._created += 1
            channel = self._rng.choice(list(CURRENCY))
            conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
                "attributes, price, currency, stock, published) VALUES (%s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, true) ON CONFLICT (sku, channel) DO NOTHING",
                (
                    f"DEMO-{self._created:06d}",
                    channel,
                    f"Sneaker {channel}",
                    "Demo Runner",
                    "Fresh in the catalog.",
                    '{"color": "Black"}',
                    49.99,
                    CURRENCY[channel],
                    10,
                ),
            )
            return 1
        cur = conn.execute(
            "DELETE FROM legacy_product WHERE id = %s", (self._rng.randint(1, high),)
        )
        return cur.rowcount


@dataclass
class ReadStats:
    total: int = 0
    failed: int = 0
    by_color: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class ReadLoad:
    """`instances` application instances (a read router each), `threads` readers each,
    reading one product (SKU) at a time with the router's keyed read; `shadow_ratio` of
    those reads shadowed (settings.shadow for the rest; `shadow(ratio)` changes it live)."""

    def __init__(
        self,
        settings: Settings,
        skus: list[str],
        instances: int = 3,
        threads: int = 2,
        shadow_ratio: float | None = None,
    ):
        self.routers = [
            ReadRouter(
                settings.control_dsn,
                {"blue": settings.blue_dsn, "green": settings.green_dsn},
                pool_size=threads,
                domain=CATALOG,
                shadow=settings.shadow,
                shadow_ratio=shadow_ratio,
            )
            for _ in range(instances)
        ]
        self.stats = ReadStats()
        self._lock = threading.Lock()
        self._skus = skus
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=(router, seed), daemon=True, name="reader")
            for router in self.routers
            for seed in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _read(self, router: ReadRouter, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - load generation
        while not self._stop.is_set():
            sku = rng.choice(self._skus)
            color = router.color
            try:
                color, _rows = router.read(sku)
                ok, error = True, ""
            except psycopg.Error as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.stats.total += 1
                self.stats.by_color[color] = self.stats.by_color.get(color, 0) + 1
                if not ok:
                    self.stats.failed += 1
                    if len(self.stats.errors) < 10:
                        self.stats.errors.append(error)
            self._stop.wait(0.005)

    def shadow(self, ratio: float) -> None:
        """Shadow this share of reads from now on (0: none)."""
        for router in self.routers:
            if router.shadow is not None:
                router.shadow.ratio = ratio

    def shadow_counts(self) -> ShadowCounts:
        """Every instance's shadowed reads, summed."""
        total = ShadowCounts()
        for router in self.routers:
            if router.shadow is not None:
                total = total.plus(router.shadow.counts)
        return total

    def switch_ms(self, epoch: int, switched_at: float) -> float:
        """When the last instance learned of `epoch`, in ms after the switch committed."""
        seen = []
        deadline = time.monotonic() + 10
        for router in self.routers:
            while True:
                match = [s for s in router.switches if s.epoch >= epoch]
                if match or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if match:
                seen.append(match[0].seen_at)
        if len(seen) < len(self.routers):
            return float("inf")
        return max(0.0, (max(seen) - switched_at) * 1000)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(5)
        for router in self.routers:
            router.close()
