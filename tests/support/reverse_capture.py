"""Helpers for green's reverse capture in tests: green rows, the slot, the topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.blue_setup import slot_health
from producers.reverse.service import ReverseCdcService
from producers.reverse.setup import REVERSE_SLOT
from schemas import reverse
from schemas.catalog import CATALOG
from schemas.lsn import parse_lsn
from tests.support.kafka import Record, read_all
from tests.support.service_thread import ServiceThread

SPEC = CATALOG.reverse
assert SPEC is not None


def create_green(settings: Settings) -> None:
    CATALOG.create_green(settings.green_dsn)


def write_product(settings: Settings, sku: str, channels: tuple[str, ...] = ("US",)) -> None:
    """One green transaction: a product and its listings (upserted)."""
    with db.connect(settings.green_dsn) as conn:
        conn.execute(
            "INSERT INTO catalog.product (sku, product_type, name, description, attributes, "
            "primary_channel, created_at, updated_at, src_lsn, src_seq) VALUES "
            "(%s, 'Sneaker', 'Runner', NULL, '{}', %s, now(), now(), 0, 0) "
            "ON CONFLICT (sku) DO UPDATE SET name = catalog.product.name || '+', "
            "updated_at = now()",
            (sku, channels[0]),
        )
        for channel in channels:
            conn.execute(
                "INSERT INTO catalog.channel_listing (sku, channel, price, currency, stock, "
                "published, created_at, updated_at, src_lsn, src_seq) VALUES "
                "(%s, %s, 10.00, 'USD', 1, true, now(), now(), 0, 0) "
                "ON CONFLICT (sku, channel) DO UPDATE "
                "SET stock = catalog.channel_listing.stock + 1",
                (sku, channel),
            )
        conn.commit()


def green_lsn(settings: Settings) -> int:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def reverse_confirmed(settings: Settings) -> int:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        health = slot_health(conn, REVERSE_SLOT)
    return 0 if health is None else health.confirmed_lsn


def slot_active(settings: Settings) -> bool:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        health = slot_health(conn, REVERSE_SLOT)
    return health is not None and health.active


def wait_reverse_confirmed(settings: Settings, timeout_s: float = 60) -> None:
    """Until the reverse slot confirmed everything written on green up to now."""
    target = green_lsn(settings)
    deadline = time.monotonic() + timeout_s
    while reverse_confirmed(settings) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reverse slot did not confirm {target}")
        time.sleep(0.1)


def changes(settings: Settings) -> list[tuple[Record, reverse.GreenChange]]:
    return [
        (r, reverse.decode(r.value)) for r in read_all(settings.kafka, settings.kafka.reverse_topic)
    ]


@contextmanager
def reverse_thread(settings: Settings) -> Iterator[tuple[ReverseCdcService, ServiceThread]]:
    """The reverse capture in a thread of this process, stopped (and checked) on exit."""
    assert SPEC is not None
    service = ReverseCdcService(settings, SPEC, Metrics(), poll_s=0.1)
    thread = ServiceThread(service, "reverse-cdc")
    try:
        yield service, thread
    finally:
        thread.stop()
        thread.check()
