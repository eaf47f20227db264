"""The application's writers for the write switch's tests: blue-version and green-version
clients writing through the traffic router as role bluegreen_app, each write a new SKU
so that every acknowledged write can be looked up at the end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from cutover import app_roles
from cutover.router import TrafficRouter
from schemas.domain import Domain


def grant_app_roles(settings: Settings, domain: Domain) -> None:
    """Blue: the application reads and writes its table; green: reads only until the
    write switch gives it writes."""
    assert domain.reverse is not None
    with db.connect(settings.blue_dsn) as conn:
        app_roles.grant_app(conn, [(domain.source.schema, domain.source.table)], write=True)
    with db.connect(settings.green_dsn) as conn:
        app_roles.grant_app(conn, list(domain.reverse.tables), write=False)


def app_router(settings: Settings, pool_size: int = 4) -> TrafficRouter:
    return TrafficRouter(
        settings.control_dsn,
        {"blue": settings.blue_dsn, "green": settings.green_dsn},
        write_dsns={
            "blue": app_roles.as_role(settings.blue_dsn),
            "green": app_roles.as_role(settings.green_dsn),
        },
        pool_size=pool_size,
        poll_interval_s=0.5,
    )


def write_new_sku(color: str, conn: psycopg.Connection, sku: str) -> None:
    """A blue-version client writes a legacy row; a green-version one the unified model."""
    if color == "blue":
        conn.execute(
            "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
            "attributes, price, currency, stock, published) VALUES (%s, 'US', 'Sneaker US', "
            "'Router write', 'acknowledged', '{\"color\": \"Red\"}', 10.00, 'USD', 1, true)",
            (sku,),
        )
        return
    conn.execute(
        "INSERT INTO catalog.product (sku, product_type, name, description, attributes, "
        "primary_channel, created_at, updated_at, src_lsn, src_seq) VALUES (%s, 'Sneaker', "
        "'Router write', 'acknowledged', '{\"color\": \"Red\"}', 'US', now(), now(), 0, 0)",
        (sku,),
    )
    conn.execute(
        "INSERT INTO catalog.channel_listing (sku, channel, price, currency, stock, published, "
        "created_at, updated_at, src_lsn, src_seq) VALUES (%s, 'US', 10.00, 'USD', 1, true, "
        "now(), now(), 0, 0)",
        (sku,),
    )


class RouterWriters:
    """`threads` writers through one router; `acked` is every write the router's commit
    acknowledged (SKU -> color), `failures` every write that raised."""

    def __init__(self, router: TrafficRouter, prefix: str, threads: int = 3) -> None:
        self.router = router
        self.acked: dict[str, str] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(f"{prefix}{t}-",), daemon=True)
            for t in range(threads)
        ]

    def _write(self, prefix: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            sku = f"{prefix}{n:05d}"
            try:
                with self.router.connection("write") as (color, conn):
                    write_new_sku(color, conn, sku)
                with self._lock:
                    self.acked[sku] = color
            except Exception as exc:  # every failure is counted and shown
                with self._lock:
                    self.failures.append(f"{sku}: {type(exc).__name__}: {exc}")
            time.sleep(0.004)

    def by_color(self, color: str) -> set[str]:
        with self._lock:
            return {sku for sku, c in self.acked.items() if c == color}

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


@contextmanager
def writing(settings: Settings, prefix: str, threads: int = 3) -> Iterator[RouterWriters]:
    router = app_router(settings, pool_size=threads + 1)
    writers = RouterWriters(router, prefix, threads)
    writers.start()
    try:
        yield writers
    finally:
        writers.stop()
        router.close()


def skus_in(settings: Settings, color: str, skus: set[str]) -> set[str]:
    table = ("public", "legacy_product") if color == "blue" else ("catalog", "product")
    dsn = settings.blue_dsn if color == "blue" else settings.green_dsn
    query = sql.SQL("SELECT DISTINCT sku FROM {} WHERE sku = ANY(%s)").format(
        sql.Identifier(*table)
    )
    with db.connect(dsn) as conn:
        rows = conn.execute(query, (sorted(skus),)).fetchall()
    return {str(r[0]) for r in rows}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
