"""Green's reverse capture (`bluegreen reverse-cdc`) against real PostgreSQL and Kafka."""

from __future__ import annotations

import signal
import threading
from collections import defaultdict

import pytest
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from producers.reverse.setup import (
    REVERSE_PUBLICATION,
    REVERSE_SLOT,
    drop_reverse,
    prepare_green,
    reverse_lag,
)
from schemas.control import FENCE_PREFIX, HEARTBEAT_PREFIX
from schemas.domain import ReverseSpec
from schemas.envelope import Op
from tests.support.cli import spawn
from tests.support.restarts import kill_cluster, local_stack, start_broker, stop_broker
from tests.support.reverse_capture import (
    SPEC,
    changes,
    create_green,
    green_lsn,
    reverse_confirmed,
    reverse_thread,
    slot_active,
    wait_reverse_confirmed,
    write_product,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def fast(settings: Settings) -> Settings:
    cdc = settings.cdc.model_copy(update={"heartbeat_interval_s": 0.5})
    return settings.model_copy(update={"cdc": cdc})


def test_setup_is_idempotent_checks_identity_and_reports_lag(settings: Settings) -> None:
    create_green(settings)
    assert SPEC is not None
    assert reverse_lag(settings).exists is False
    first = prepare_green(settings, SPEC)
    assert prepare_green(settings, SPEC) == first  # again: nothing changes
    lag = reverse_lag(settings)
    assert lag.exists and not lag.active and lag.confirmed_lsn == first
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE catalog.no_key (id int PRIMARY KEY, sku text)")
        tables = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
            (REVERSE_PUBLICATION,),
        ).fetchall()
    assert tables == [("channel_listing",), ("product",)]
    bad = ReverseSpec(tables=(("catalog", "no_key"),), key_column="sku")
    with pytest.raises(BluegreenError, match="REPLICA IDENTITY DEFAULT without sku") as refused:
        prepare_green(settings, bad)
    assert "\n" not in str(refused.value)
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE catalog.no_key REPLICA IDENTITY FULL")
    prepare_green(settings, bad)  # FULL carries every column
    assert drop_reverse(settings) == [f"slot {REVERSE_SLOT}", f"publication {REVERSE_PUBLICATION}"]
    assert drop_reverse(settings) == []
    assert reverse_lag(settings).exists is False


def test_concurrent_prepares_agree(settings: Settings) -> None:
    create_green(settings)
    assert SPEC is not None
    barrier = threading.Barrier(3)
    results: list[int | BaseException] = []

    def prepare() -> None:
        barrier.wait(10)
        try:
            results.append(prepare_green(settings, SPEC))
        except BaseException as exc:  # kept for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3 and all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 1 and results[0] > 0


def test_waits_for_the_slot_then_streams_changes_keyed_by_sku_and_fences_everywhere(
    settings: Settings,
) -> None:
    settings = fast(settings)
    create_green(settings)
    assert SPEC is not None
    write_product(settings, "SKU-BEFORE")  # before the slot: not writes on green yet
    with reverse_thread(settings) as (service, thread):
        wait_until(lambda: service.waiting, "the service waiting for the slot", 60)
        assert service.metrics.reverse_cdc_slot_present._value.get() == 0
        thread.check()
        prepare_green(settings, SPEC)
        wait_until(lambda: slot_active(settings), "the service streaming the slot", 30)
        write_product(settings, "SKU-A", ("US", "GB"))
        write_product(settings, "SKU-B")
        with db.connect(settings.green_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM catalog.product WHERE sku = 'SKU-B'")  # cascades
            conn.execute("SELECT pg_logical_emit_message(true, %s, 'fence-9')", (FENCE_PREFIX,))
        wait_reverse_confirmed(settings)
        thread.check()
    found = changes(settings)
    rows = [(c.key, c.table, c.op) for _, c in found if c.op != Op.MESSAGE]
    assert "SKU-BEFORE" not in {key for key, _, _ in rows}
    assert sorted(rows) == sorted(
        [
            ("SKU-A", "catalog.product", Op.CREATE),
            ("SKU-A", "catalog.channel_listing", Op.CREATE),
            ("SKU-B", "catalog.product", Op.CREATE),
            ("SKU-B", "catalog.channel_listing", Op.CREATE),
            ("SKU-B", "catalog.product", Op.DELETE),
            ("SKU-B", "catalog.channel_listing", Op.DELETE),
        ]
    )
    partitions = {record.partition for record, _ in found}
    by_key: dict[bytes, set[int]] = defaultdict(set)
    for record, change in found:
        if change.op != Op.MESSAGE:
            assert record.key == change.key.encode()
            by_key[record.key].add(record.partition)
            assert change.version.lsn > 0 and change.version.seq >= 1 and change.ts_ms > 0
    assert all(len(p) == 1 for p in by_key.values())  # one aggregate, one partition
    fences = [(r.partition, c.content) for r, c in found if c.prefix == FENCE_PREFIX]
    assert sorted(fences) == [(p, "fence-9") for p in range(settings.kafka.partitions)]
    beats = {r.partition for r, c in found if c.prefix == HEARTBEAT_PREFIX}
    assert beats == set(range(settings.kafka.partitions)) and partitions == beats


def test_a_dropped_slot_sends_the_service_back_to_waiting(settings: Settings) -> None:
    create_green(settings)
    assert SPEC is not None
    prepare_green(settings, SPEC)
    with reverse_thread(settings) as (service, thread):
        wait_until(lambda: slot_active(settings), "the service streaming the slot", 30)
        write_product(settings, "SKU-1")
        wait_reverse_confirmed(settings)
        drop_reverse(settings)  # the rollback: the active slot's walsender is terminated
        wait_until(lambda: service.waiting, "the service waiting again", 30)
        assert service.metrics.reverse_cdc_slot_present._value.get() == 0
        write_product(settings, "SKU-WHILE-ON-BLUE")
        thread.check()  # still running
        prepare_green(settings, SPEC)  # the next cutover --writes
        wait_until(lambda: slot_active(settings), "streaming the new slot", 30)
        write_product(settings, "SKU-2")
        wait_reverse_confirmed(settings)
        thread.check()
    keys = {c.key for _, c in changes(settings) if c.op != Op.MESSAGE}
    assert keys == {"SKU-1", "SKU-2"}


def test_kill_9_of_green_and_of_the_service_lose_no_committed_change(settings: Settings) -> None:
    stack = local_stack()
    create_green(settings)
    assert SPEC is not None
    prepare_green(settings, SPEC)
    committed: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            sku = f"SKU-{n:05d}"
            try:
                write_product(settings, sku)
            except Exception:  # green is down: the write was not acknowledged
                stop.wait(0.2)
                continue
            committed.append(sku)
            n += 1

    thread = threading.Thread(target=writer, daemon=True)
    first = spawn(settings, "reverse-cdc", "--metrics-port", "-1")
    try:
        wait_until(lambda: slot_active(settings), "reverse-cdc streaming", 60)
        thread.start()
        wait_until(lambda: len(committed) >= 50, "green commits", 60)
        kill_cluster(stack, "green")  # kill -9 of green's postmaster, crash recovery
        wait_until(lambda: len(committed) >= 150, "green commits after its crash", 120)
        wait_until(lambda: slot_active(settings), "reverse-cdc streaming again", 120)
        first.signal(signal.SIGKILL)  # kill -9 of the service, mid-stream
        first.wait(10)
    finally:
        first.close()
    wait_until(lambda: len(committed) >= 250, "green commits while nothing captures", 60)
    second = spawn(settings, "reverse-cdc", "--metrics-port", "-1")
    try:
        wait_until(lambda: slot_active(settings), "the second reverse-cdc streaming", 60)
        wait_until(lambda: len(committed) >= 350, "green commits", 60)
        stop.set()
        thread.join(30)
        wait_reverse_confirmed(settings, timeout_s=120)
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0, second.output()
    finally:
        second.close()
    captured = {c.key for _, c in changes(settings) if c.table == "catalog.product"}
    missing = [sku for sku in committed if sku not in captured]
    assert missing == []


def test_the_publication_follows_the_spec(settings: Settings) -> None:
    """A spec with one table publishes that one table (and nothing else is captured)."""
    create_green(settings)
    only = ReverseSpec(tables=(("catalog", "product"),), key_column="sku")
    prepare_green(settings, only)
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        tables = conn.execute(
            sql.SQL("SELECT tablename FROM pg_publication_tables WHERE pubname = {}").format(
                sql.Literal(REVERSE_PUBLICATION)
            )
        ).fetchall()
    assert tables == [("product",)]
    prepare_green(settings, SPEC)  # a wider spec adds the missing table
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = %s", (REVERSE_PUBLICATION,)
        ).fetchone()
    assert count == (2,)


def test_broker_down_holds_the_reverse_slot_and_the_service_resumes(settings: Settings) -> None:
    stack = local_stack()
    kafka = settings.kafka.model_copy(update={"extra": {"message.timeout.ms": "4000"}})
    settings = settings.model_copy(update={"kafka": kafka})
    create_green(settings)
    assert SPEC is not None
    prepare_green(settings, SPEC)
    with reverse_thread(settings) as (service, thread):
        wait_until(lambda: slot_active(settings), "the service streaming the slot", 30)
        write_product(settings, "SKU-BEFORE")
        wait_reverse_confirmed(settings)
        stop_broker(stack)
        try:
            broker_gone = green_lsn(settings)  # changes after this wait for the broker
            for n in range(20):
                write_product(settings, f"SKU-DOWN-{n}")
            wait_until(lambda: service.stream_restarts >= 1, "the stream given up, retried", 120)
            assert reverse_confirmed(settings) <= broker_gone  # the slot held
            assert service.metrics.dependency_up.labels("kafka")._value.get() == 0
            thread.check()
        finally:
            start_broker(stack)
        write_product(settings, "SKU-AFTER")
        wait_reverse_confirmed(settings, timeout_s=120)
        thread.check()
    keys = {c.key for _, c in changes(settings) if c.table == "catalog.product"}
    assert keys == {"SKU-BEFORE", "SKU-AFTER", *(f"SKU-DOWN-{n}" for n in range(20))}
