"""The long-lived services ride through their dependencies restarting.

`bluegreen cdc` and `bluegreen consume` run as an operator runs them, as processes,
under a blue write load, while blue restarts (pg_ctl), green crashes (kill -9 of its
postmaster, crash recovery) and the broker stops and starts again: no process
exits, and once the writes stop green is exactly transform(blue).
"""

from __future__ import annotations

import signal
import time

import pytest

from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.snapshot import service as snapshot
from schemas.catalog import SOURCE
from tests.integration.test_consumer import assert_exact, prepared
from tests.integration.test_consumer_faults import assert_positions_agree
from tests.support.blue_writer import BlueWriter
from tests.support.cdc import wait_confirmed
from tests.support.cli import Spawned, spawn
from tests.support.consume import wait_drained
from tests.support.restarts import (
    kill_cluster,
    local_stack,
    restart_cluster,
    start_broker,
    stop_broker,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_cdc_and_consumer_ride_through_blue_green_and_kafka_restarts(settings: Settings) -> None:
    settings = prepared(settings, 3_000)
    stack = local_stack()
    writer = BlueWriter(settings, seed=5, pause_s=0.01, ride_through_restarts=True)
    services: list[Spawned] = []
    try:
        services.append(spawn(settings, "cdc", "--metrics-port", "-1"))
        services.append(spawn(settings, "consume", "--metrics-port", "-1"))
        writer.start()
        snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)

        def writes_go_on() -> None:
            done = writer.transactions
            wait_until(lambda: writer.transactions > done + 20, "blue writes after the fault", 90)

        restart_cluster(stack, "blue")
        writes_go_on()
        kill_cluster(stack, "green")
        writes_go_on()
        stop_broker(stack)
        time.sleep(3)  # the fault's duration: blue keeps committing meanwhile
        start_broker(stack)
        back = time.monotonic()
        writes_go_on()
        writer.stop.set()
        writer.join(30)
        assert writer.error is None
        wait_confirmed(settings, timeout_s=120)
        wait_drained(settings, timeout_s=120)
        print(f"drained {time.monotonic() - back:.1f}s after the broker came back")
        for service in services:
            assert service.poll() is None, service.output()[-3000:]
            service.signal(signal.SIGTERM)
            assert service.wait(60) == 0, service.output()[-3000:]
    finally:
        writer.stop.set()
        for service in services:
            service.close()
    assert_exact(settings)
    assert_positions_agree(settings)
