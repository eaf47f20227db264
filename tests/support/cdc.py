"""Helpers to run the CDC service in tests and wait for it to catch up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.blue_setup import slot_health
from producers.cdc.service import CdcService
from schemas.catalog import SOURCE
from schemas.lsn import parse_lsn
from schemas.source import SourceSpec
from tests.support.service_thread import ServiceThread


def current_lsn(settings: Settings) -> int:
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def wait_confirmed(settings: Settings, lsn: int | None = None, timeout_s: float = 60) -> None:
    """Wait until the slot confirmed everything written on blue up to now (or `lsn`)."""
    target = current_lsn(settings) if lsn is None else lsn
    deadline = time.monotonic() + timeout_s
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        while True:
            health = slot_health(conn, settings.cdc.slot)
            if health is not None and health.confirmed_lsn >= target:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot did not confirm {target}: {health}")
            time.sleep(0.1)


@contextmanager
def running_cdc(settings: Settings, source: SourceSpec = SOURCE) -> Iterator[CdcService]:
    """The CDC service in a thread of this process, stopped (and checked) on exit."""
    with cdc_thread(settings, source) as (service, _thread):
        yield service


@contextmanager
def cdc_thread(
    settings: Settings, source: SourceSpec = SOURCE
) -> Iterator[tuple[CdcService, ServiceThread]]:
    """Like running_cdc, with the thread (its `failure`) for tests that watch it run."""
    service = CdcService(settings, source, Metrics())
    thread = ServiceThread(service, "cdc")
    deadline = time.monotonic() + 30
    while not slot_active(settings):
        thread.check()
        if time.monotonic() > deadline:
            raise TimeoutError("the CDC service did not start streaming")
        time.sleep(0.05)
    try:
        yield service, thread
    finally:
        thread.stop()
        thread.check()


def confirmed_lsn(settings: Settings) -> int:
    """The slot's confirmed_flush_lsn on blue."""
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        health = slot_health(conn, settings.cdc.slot)
    assert health is not None
    return health.confirmed_lsn


def slot_active(settings: Settings) -> bool:
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        health = slot_health(conn, settings.cdc.slot)
    return health is not None and health.active
