"""The reverse applier under faults: blue, green and Kafka restarts, and two appliers
sharing the partitions (rebalances) while green takes writes."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import TypeVar

import psycopg
import pytest
from confluent_kafka import KafkaException

from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.snapshot import service as snapshot
from schemas.catalog import SOURCE
from schemas.catalog.seed_load import load_seed
from tests.integration.test_reverse_apply import ALL_THREE, assert_both_ways_exact, skus
from tests.support.cli import Spawned, spawn
from tests.support.consume import running_consumer, wait_drained
from tests.support.restarts import (
    kill_cluster,
    local_stack,
    restart_cluster,
    start_broker,
    stop_broker,
)
from tests.support.reverse import (
    blue_positions,
    changes,
    produce,
    reverse_settings,
    running_reverse,
    wait_reverse_drained,
    write_green,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.fixture
def rev(settings: Settings) -> Iterator[Settings]:
    load_seed(settings.blue_dsn, 300, 42, replace=False)
    snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
    with running_consumer(settings):
        wait_drained(settings)
    with reverse_settings(settings) as own:
        yield own


class GreenClient(threading.Thread):
    """A green-version client: random product and listing writes, each followed by its
    GreenChange events; rides through restarts (a write retried until it commits, its
    events until Kafka takes them)."""

    def __init__(self, settings: Settings, pool: list[str]) -> None:
        super().__init__(daemon=True)
        self.settings, self.pool = settings, pool
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(11)
        try:
            while not self.stop.is_set():
                picked = rng.sample(self.pool, 2)
                statements = [
                    (
                        "UPDATE catalog.channel_listing SET price = %s, stock = %s"
                        " WHERE sku = %s AND channel = 'EU'",
                        (Decimal(rng.randint(100, 99999)) / 100, rng.randint(0, 50), picked[0]),
                    ),
                    (
                        "UPDATE catalog.product SET name = %s WHERE sku = %s",
                        (f"Name {rng.randint(0, 10**6)}", picked[1]),
                    ),
                ]
                lsn = self._retry(partial(write_green, self.settings, statements))
                events = changes(picked, lsn)
                self._retry(partial(produce, self.settings, events))
                self.transactions += 1
                time.sleep(0.01)
        except BaseException as exc:
            self.error = exc

    def _retry(self, step: Callable[[], T]) -> T:
        deadline = time.monotonic() + 120
        while True:
            try:
                return step()
            except (psycopg.OperationalError, KafkaException, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def wait_more(self, count: int, what: str) -> None:
        done = self.transactions
        wait_until(lambda: self.transactions > done + count, what, 120)


def test_reverse_apply_rides_through_blue_green_and_kafka_restarts(rev: Settings) -> None:
    stack = local_stack()
    client = GreenClient(rev, skus(rev, ALL_THREE)[:30])
    service: Spawned | None = None
    try:
        service = spawn(rev, "reverse-apply", "--metrics-port", "-1")
        client.start()
        wait_until(lambda: sum(blue_positions(rev).values()) > 10, "blue applied some", 90)
        restart_cluster(stack, "blue")
        client.wait_more(20, "green writes after blue's restart")
        kill_cluster(stack, "green")
        client.wait_more(20, "green writes after green's crash")
        stop_broker(stack)
        time.sleep(3)
        start_broker(stack)
        client.wait_more(20, "green writes after the broker's restart")
        client.stop.set()
        client.join(60)
        assert client.error is None, client.error
        wait_reverse_drained(rev, timeout_s=180)
        assert service.poll() is None, service.output()[-3000:]
        service.signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.output()[-3000:]
    finally:
        client.stop.set()
        if service is not None:
            service.close()
    assert_both_ways_exact(rev)


def test_two_appliers_share_the_partitions_and_converge(rev: Settings) -> None:
    client = GreenClient(rev, skus(rev, ALL_THREE)[:30])
    client.start()
    try:
        with running_reverse(rev) as first:
            client.wait_more(30, "green writes with one applier")
            with running_reverse(rev) as second:  # a rebalance: the partitions are shared
                client.wait_more(60, "green writes with two appliers")
            client.wait_more(30, "green writes after the second left")
            client.stop.set()
            client.join(30)
            assert client.error is None, client.error
            wait_reverse_drained(rev)
        assert first.applied > 0 and second.applied > 0
    finally:
        client.stop.set()
    assert_both_ways_exact(rev)
