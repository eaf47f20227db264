"""The CDC producer against real PostgreSQL and Kafka."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from bluegreen.app.stack.processes import peak_rss_mb
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.kafka import topic_ends
from producers.blue_setup import prepare_blue
from producers.cdc.service import CdcService
from producers.cdc.stream import ReplicationError, ReplicationLostError, ReplicationStream
from schemas.catalog import SOURCE
from schemas.catalog.seed_load import load_seed
from schemas.codec import default_codec
from tests.support.cdc import (
    cdc_thread,
    confirmed_lsn,
    current_lsn,
    running_cdc,
    slot_active,
    wait_confirmed,
)
from tests.support.cli import spawn
from tests.support.kafka import read_all
from tests.support.restarts import kill_blue, local_stack, restart_blue, start_broker, stop_broker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def seed(settings: Settings, rows: int = 200) -> None:
    load_seed(settings.blue_dsn, rows, 42, replace=False)


def events(settings: Settings) -> list[tuple[Any, dict[str, Any]]]:
    codec = default_codec()
    return [(r, codec.decode(r.value)) for r in read_all(settings.kafka, settings.kafka.topic)]


def row_events(settings: Settings) -> list[dict[str, Any]]:
    return [e for _, e in events(settings) if e["op"] in ("c", "u", "d")]


def test_inserts_updates_deletes_pk_change_and_toast(settings: Settings) -> None:
    seed(settings)
    big = os.urandom(6000).hex()
    with running_cdc(settings):
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE not_published (id int PRIMARY KEY)")
            conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
                "price, currency) VALUES ('NEW-1', 'US', 'Boot US', 'New', %s, 10.00, 'USD')",
                (big,),
            )
            conn.execute("UPDATE legacy_product SET stock = 77 WHERE sku = 'NEW-1'")  # TOAST kept
            conn.execute("UPDATE legacy_product SET id = 99999 WHERE sku = 'NEW-1'")  # new PK
            conn.execute("UPDATE legacy_product SET price = 1.25 WHERE id = 5")
            conn.execute("DELETE FROM legacy_product WHERE id = 6")
            conn.execute("INSERT INTO not_published VALUES (1)")
            with conn.transaction():
                conn.execute("UPDATE legacy_product SET stock = 1 WHERE id = 7")
                conn.execute("UPDATE legacy_product SET stock = 2 WHERE id = 7")
        wait_confirmed(settings)
    got = sorted(row_events(settings), key=lambda e: (e["source"]["lsn"], e["source"]["seq"]))
    ops = [(e["op"], (e["after"] or e["before"])["id"]) for e in got]
    assert ops == [
        ("c", 201),
        ("u", 201),
        ("d", 201),
        ("c", 99999),
        ("u", 5),
        ("d", 6),
        ("u", 7),
        ("u", 7),
    ]
    insert, toast_update, pk_delete, pk_create = got[:4]
    assert insert["after"]["description"] == big
    assert toast_update["after"]["description"] == big  # unchanged TOAST is not emptied
    assert toast_update["after"]["stock"] == 77
    assert pk_delete["source"]["lsn"] == pk_create["source"]["lsn"]
    assert pk_create["source"]["seq"] == pk_delete["source"]["seq"] + 1
    assert pk_create["after"]["description"] == big
    assert got[4]["after"]["price"] == Decimal("1.25")
    same_txn = got[6:8]
    assert same_txn[0]["source"]["lsn"] == same_txn[1]["source"]["lsn"]
    assert [e["source"]["seq"] for e in same_txn] == [1, 2]
    assert all(e["source"]["snapshot"] is False and e["source"]["txid"] for e in got)
    per_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for record, event in events(settings):
        if event["op"] in ("c", "u", "d"):
            per_key[record.key].append((event["source"]["lsn"], event["source"]["seq"]))
    assert all(v == sorted(v) for v in per_key.values())  # commit order on each key


def test_fence_and_truncate_reach_every_partition(settings: Settings) -> None:
    seed(settings, 20)
    with running_cdc(settings):
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, 'bluegreen.fence', 'cutover-7')")
            conn.execute("TRUNCATE legacy_product")
        wait_confirmed(settings)
    found = events(settings)
    fences = {
        r.partition for r, e in found if e["op"] == "m" and e["message"]["content"] == "cutover-7"
    }
    truncates = {r.partition for r, e in found if e["op"] == "t"}
    assert fences == truncates == set(range(settings.kafka.partitions))


def test_hundred_thousand_row_transaction_with_bounded_memory(settings: Settings) -> None:
    seed(settings, 10)
    proc = spawn(settings, "cdc", "--metrics-port", "-1")
    try:
        wait_for_active_slot(settings)
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, description, "
                "price, currency, stock, published) "
                "SELECT 'BIG-' || g, 'GB', 'Boot GB', 'Bulk ' || g, repeat('d', 300), g % 500, "
                "'GBP', g % 50, true FROM generate_series(1, 100000) g"
            )
        wait_confirmed(settings, timeout_s=180)
        peak_mb = peak_rss_mb(proc.pid)  # the CLI process runs the capture loop itself
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.output()
    finally:
        proc.close()
    creates = [e for e in row_events(settings) if e["op"] == "c"]
    assert len(creates) == 100_000
    assert len({e["source"]["lsn"] for e in creates}) == 1  # one transaction
    assert sorted(e["source"]["seq"] for e in creates) == list(range(1, 100_001))
    assert peak_mb is not None and peak_mb < 350, f"peak RSS {peak_mb} MB"


def wait_for_active_slot(settings: Settings, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (settings.cdc.slot,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise TimeoutError("CDC did not start streaming")


class Writer(threading.Thread):
    """Concurrent blue writer: small transactions of increments, inserts and deletes.

    It records what it committed, so the test can check Kafka holds all of it. With
    `ride_through_restarts` it reconnects when blue goes away (a transaction whose
    commit failed that way may or may not have committed: it is not recorded).
    """

    def __init__(self, settings: Settings, *, ride_through_restarts: bool = False) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.committed: set[tuple[int, int]] = set()  # (id, stock) of every committed update
        self.deleted: set[int] = set()
        self.inserted: set[int] = set()
        self.commits = 0
        self.interruptions = 0
        self.error: BaseException | None = None
        self._ride_through = ride_through_restarts
        self._rng = random.Random(1)
        self._n = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    with db.connect(self.settings.blue_dsn) as conn:
                        while not self.stop.is_set():
                            self._write(conn)
                except psycopg.OperationalError:
                    if not self._ride_through:
                        raise
                    self.interruptions += 1
                    self._await_blue()
        except BaseException as exc:
            self.error = exc

    def _await_blue(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            try:
                with db.connect(self.settings.blue_dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _write(self, conn: psycopg.Connection) -> None:
        self._n += 1
        n, rng = self._n, self._rng
        ids = rng.sample(range(1, 201), 3)
        rows = conn.execute(
            "UPDATE legacy_product SET stock = coalesce(stock, 0) + 1 "
            "WHERE id = ANY(%s) RETURNING id, stock",
            (ids,),
        ).fetchall()
        inserted = None
        if n % 7 == 0:
            inserted = conn.execute(
                "INSERT INTO legacy_product (sku, channel, product_type, name, price, "
                "currency) VALUES (%s, 'EU', 'Boot EU', 'n', 1, 'EUR') RETURNING id",
                (f"W-{n}",),
            ).fetchone()
        deleted = None
        if n % 11 == 0 and self.inserted:
            victim = min(self.inserted - self.deleted, default=None)
            if victim is not None:
                conn.execute("DELETE FROM legacy_product WHERE id = %s", (victim,))
                deleted = victim
        conn.commit()
        self.commits += 1
        self.committed.update((int(i), int(s)) for i, s in rows)
        if inserted:
            self.inserted.add(int(inserted[0]))
        if deleted:
            self.deleted.add(deleted)
        time.sleep(0.002)

    def wait_commits(self, more: int, timeout_s: float = 60) -> None:
        """Wait until `more` further transactions committed."""
        target = self.commits + more
        wait_until(
            lambda: self.commits >= target or self.error is not None,
            "the writer's commits",
            timeout_s,
        )
        assert self.error is None, self.error


def test_kill_9_and_restart_with_a_concurrent_writer_loses_nothing(settings: Settings) -> None:
    seed(settings, 200)
    writer = Writer(settings)
    # Statuses every 5 s: the kill below lands well inside the window between two, so
    # the first run dies with acknowledged but unconfirmed transactions.
    slow_status = settings.cdc.model_copy(update={"status_interval_s": 5.0})
    first = spawn(settings.model_copy(update={"cdc": slow_status}), "cdc", "--metrics-port", "-1")
    try:
        wait_for_active_slot(settings)
        start = confirmed_lsn(settings)
        writer.start()
        wait_until(
            lambda: confirmed_lsn(settings) > start, "the slot confirming", 30
        )  # capturing and confirming
        writer.wait_commits(30)
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.close()
    wait_until(
        lambda: not slot_active(settings), "the walsender's end", 60
    )  # its walsender read its last status
    restart_point = confirmed_lsn(settings)  # where the next run's stream starts
    writer.wait_commits(50)  # the writer keeps committing while nothing captures
    boundary = topic_ends(settings.kafka, f"ends-{uuid.uuid4().hex[:8]}")
    second = spawn(settings, "cdc", "--metrics-port", "-1")
    try:
        wait_for_active_slot(settings)
        writer.wait_commits(100)
        writer.stop.set()
        writer.join(10)
        assert writer.error is None, writer.error
        wait_confirmed(settings, current_lsn(settings), timeout_s=120)
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0, second.output()
    finally:
        second.close()

    # Walk each partition in offset order; a replay after the crash repeats a suffix,
    # so keep only events newer than everything seen before on that key.
    newest: dict[bytes, tuple[int, int]] = {}
    seen_updates: set[tuple[int, int]] = set()
    created: set[int] = set()
    deleted: set[int] = set()
    per_partition: dict[int, list[tuple[Any, dict]]] = defaultdict(list)
    for record, event in events(settings):
        if event["op"] in ("c", "u", "d"):
            per_partition[record.partition].append((record, event))
    replays = 0
    for items in per_partition.values():
        for record, event in sorted(items, key=lambda item: item[0].offset):
            version = (event["source"]["lsn"], event["source"]["seq"])
            if version <= newest.get(record.key, (-1, -1)):
                replays += 1
                continue
            newest[record.key] = version
            if event["op"] == "u":
                seen_updates.add((event["after"]["id"], event["after"]["stock"]))
            elif event["op"] == "c":
                created.add(event["after"]["id"])
            else:
                deleted.add(event["before"]["id"])
    # The replay is exactly the first run's events at or after the slot's confirmed
    # position when it died: each resent once, nothing before that position resent.
    first_run, second_run = set(), []
    for items in per_partition.values():
        for record, event in items:
            ident = (record.key, event["source"]["lsn"], event["source"]["seq"])
            if record.offset < boundary[record.partition]:
                first_run.add(ident)
            else:
                second_run.append(ident)
    unconfirmed = {ident for ident in first_run if ident[1] >= restart_point}
    assert all(lsn >= restart_point for _, lsn, _ in second_run)
    resent = [ident for ident in second_run if ident in first_run]
    assert len(resent) == len(set(resent)) and set(resent) == unconfirmed
    assert replays == len(unconfirmed) > 0  # the crash left acknowledged, unconfirmed work
    assert writer.committed and seen_updates >= writer.committed  # no committed update missing
    assert {i for i, _ in seen_updates} <= set(range(1, 201)) | writer.inserted
    assert created >= writer.inserted
    assert deleted >= writer.deleted
    # In order per key, no gaps: each row's captured stock values climb by exactly one.
    by_row: dict[int, list[int]] = defaultdict(list)
    for row_id, stock in seen_updates:
        by_row[row_id].append(stock)
    for row_id, stocks in by_row.items():
        stocks.sort()
        assert stocks == list(range(stocks[0], stocks[0] + len(stocks))), row_id


Row = tuple[Any, ...]


def blue_rows(settings: Settings) -> dict[int, Row]:
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id, sku, channel, stock, price FROM legacy_product")
        return {int(r[0]): tuple(r[1:]) for r in rows.fetchall()}


def captured_onto(base: dict[int, Row], settings: Settings) -> dict[int, Row]:
    """`base` (blue before capture) with the newest captured event of each row applied."""
    newest: dict[int, tuple[tuple[int, int], dict[str, Any]]] = {}
    for _, event in events(settings):
        if event["op"] not in ("c", "u", "d"):
            continue
        row_id = (event["after"] or event["before"])["id"]
        version = (event["source"]["lsn"], event["source"]["seq"])
        if row_id not in newest or version > newest[row_id][0]:
            newest[row_id] = (version, event)
    state = dict(base)
    for row_id, (_, event) in newest.items():
        after = event["after"]
        if after is None:
            state.pop(row_id, None)
        else:
            state[row_id] = (after["sku"], after["channel"], after["stock"], after["price"])
    return state


def dependency_up(service: CdcService, dependency: str) -> float:
    return float(service.metrics.dependency_up.labels(dependency)._value.get())


def test_blue_restart_and_crash_under_a_running_cdc_lose_nothing(settings: Settings) -> None:
    stack = local_stack()
    seed(settings, 200)
    before = blue_rows(settings)
    writer = Writer(settings, ride_through_restarts=True)
    with cdc_thread(settings) as (service, thread):
        writer.start()
        writer.wait_commits(50)
        restart_blue(stack)  # pg_ctl restart -m fast
        writer.wait_commits(50, timeout_s=120)
        wait_until(
            lambda: service.stream_restarts >= 1 and slot_active(settings),
            "the first stream restart",
            120,
        )
        assert thread.failure is None
        kill_blue(stack)  # kill -9 of the postmaster, then a start with crash recovery
        writer.wait_commits(50, timeout_s=120)
        wait_until(
            lambda: service.stream_restarts >= 2 and slot_active(settings),
            "the second stream restart",
            120,
        )
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        assert writer.interruptions >= 2
        wait_confirmed(settings, current_lsn(settings), timeout_s=120)
        assert thread.failure is None
        assert dependency_up(service, "blue") == 1
    assert captured_onto(before, settings) == blue_rows(settings)


def test_broker_down_holds_the_slot_and_cdc_resumes(settings: Settings) -> None:
    stack = local_stack()
    seed(settings, 200)
    # Messages time out while the broker is away: the service restarts the stream.
    kafka = settings.kafka.model_copy(update={"extra": {"message.timeout.ms": "4000"}})
    settings = settings.model_copy(update={"kafka": kafka})
    before = blue_rows(settings)
    writer = Writer(settings)
    with cdc_thread(settings) as (service, thread):
        writer.start()
        wait_until(lambda: service.events_acked >= 100, "acknowledged events", 60)
        stop_broker(stack)
        try:
            broker_gone = current_lsn(settings)  # changes after this wait for the broker
            writer.wait_commits(20)
            highest = 0

            def held() -> bool:
                nonlocal highest
                highest = max(highest, confirmed_lsn(settings))
                return service.stream_restarts >= 1

            wait_until(
                held, "the slot held, the stream retried", 120
            )  # timed out, given up, retried from the slot
            writer.wait_commits(20)
            highest = max(highest, confirmed_lsn(settings))
            assert highest <= broker_gone < current_lsn(settings)
            assert dependency_up(service, "kafka") == 0
            assert thread.failure is None
        finally:
            start_broker(stack)
        wait_until(lambda: dependency_up(service, "kafka") == 1, "kafka up again", 120)
        writer.wait_commits(50)
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        wait_confirmed(settings, current_lsn(settings), timeout_s=120)
        assert thread.failure is None
    assert captured_onto(before, settings) == blue_rows(settings)


def test_idle_blue_shows_zero_lag_and_the_slot_follows_unrelated_wal(settings: Settings) -> None:
    seed(settings, 10)
    heartbeat = settings.cdc.model_copy(update={"heartbeat_interval_s": 0.5})
    settings = settings.model_copy(update={"cdc": heartbeat})
    with running_cdc(settings) as service:
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE unrelated (id int, pad text)")
            conn.execute(
                "INSERT INTO unrelated SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g"
            )
        target = current_lsn(settings)
        wait_confirmed(settings, target, timeout_s=30)  # not published, yet the slot advances
        time.sleep(2.5)
        lag = service.metrics.forward_capture().source_lag_seconds._value.get()
        assert lag < 2.0  # heartbeats keep the lag current on an idle blue
        assert service.metrics.forward_capture().source_lag_bytes._value.get() < 100_000
    heartbeats = [
        (r.partition, e)
        for r, e in events(settings)
        if e["op"] == "m" and e["message"]["prefix"] == "bluegreen.heartbeat"
    ]
    assert {p for p, _ in heartbeats} == set(range(settings.kafka.partitions))


def test_sigterm_stops_cleanly_and_the_next_run_resumes_without_replaying(
    settings: Settings,
) -> None:
    seed(settings, 50)
    proc = spawn(settings, "cdc", "--metrics-port", "-1")
    try:
        wait_for_active_slot(settings)
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            conn.execute("UPDATE legacy_product SET stock = 500 WHERE id <= 10")
        wait_confirmed(settings)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output()
        assert "stopped" in proc.output()
    finally:
        proc.close()
    with db.connect(settings.blue_dsn, autocommit=True) as conn:
        conn.execute("UPDATE legacy_product SET stock = 600 WHERE id <= 10")
    with running_cdc(settings):
        wait_confirmed(settings)
    updates = [e for e in row_events(settings) if e["op"] == "u"]
    assert sorted(e["after"]["stock"] for e in updates) == [500] * 10 + [600] * 10


def test_start_replication_tells_a_transient_failure_from_a_dead_end(settings: Settings) -> None:
    seed(settings, 5)
    cdc = settings.cdc
    prepare_blue(settings.blue_dsn, SOURCE, cdc)
    with pytest.raises(ReplicationError) as missing:
        ReplicationStream(settings.blue_dsn, "no_such_slot", cdc.publication)
    assert not isinstance(missing.value, ReplicationLostError)  # no retry cures it
    holder = ReplicationStream(settings.blue_dsn, cdc.slot, cdc.publication)
    try:
        with pytest.raises(ReplicationLostError, match="active"):  # held: retry later
            ReplicationStream(settings.blue_dsn, cdc.slot, cdc.publication)
    finally:
        holder.close()
    closed = settings.blue_dsn.get_secret_value().replace(f":{settings.stack.blue_port}/", ":1/")
    with pytest.raises(ReplicationLostError):  # nobody listens: retry later
        ReplicationStream(SecretStr(closed), cdc.slot, cdc.publication)
