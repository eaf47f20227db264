"""The bulk snapshot against the real broker and PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from bluegreen import db
from bluegreen.config import Settings as BGSettings
from bluegreen.config import SnapshotSettings
from bluegreen.errors import BluegreenError
from bluegreen.kafka import ensure_topic
from bluegreen.metrics import Metrics
from producers.snapshot import service, tasks
from producers.snapshot.worker import SnapshotWorker
from schemas.catalog import SOURCE
from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed_load import load_seed
from schemas.codec import default_codec
from tests.support.cli import bluegreen, spawn
from tests.support.kafka import read_all

pytestmark = pytest.mark.integration


def seeded(settings: BGSettings, rows: int, **snapshot: Any) -> BGSettings:
    load_seed(settings.blue_dsn, rows, 42, replace=False)
    fast = {"heartbeat_interval_s": 0.3, "heartbeat_timeout_s": 2.0, "backoff_base_s": 0.1}
    options = SnapshotSettings(**{**fast, **snapshot})
    return settings.model_copy(update={"snapshot": options})


def blue_rows(settings: BGSettings) -> dict[int, dict[str, Any]]:
    with db.connect(settings.blue_dsn) as conn:
        columns = ", ".join(f"{c}::text" if c == "attributes" else c for c in COLUMNS)
        cur = conn.execute(f"SELECT {columns} FROM legacy_product")
        return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in cur}


def task_table(settings: BGSettings) -> list[dict[str, Any]]:
    with db.connect(settings.control_dsn) as conn:
        return tasks.task_rows(conn)


def test_every_blue_row_arrives_in_kafka_exactly_as_encoded(settings: BGSettings) -> None:
    settings = seeded(settings, 6_000, chunk_size=700, workers=2)
    report = service.SnapshotService(settings, SOURCE, Metrics()).run(workers=2)
    assert report.ok, report
    assert report.rows == 6_000
    assert report.tasks == 9  # ceil(6000 / 700)

    blue = blue_rows(settings)
    records = read_all(settings.kafka, settings.kafka.topic)
    assert len(records) == len(blue) == 6_000
    codec = default_codec()
    lsns = {t["snapshot_lsn"] for t in task_table(settings)}
    partition_of: dict[bytes, int] = {}
    for record in records:
        event = codec.decode(record.value)
        assert event["op"] == "r" and event["before"] is None
        assert event["source"]["snapshot"] is True and event["source"]["seq"] == 0
        assert event["source"]["lsn"] in lsns
        after = event["after"]
        assert after == blue.pop(after["id"])  # content: every column, exactly
        assert record.key == after["sku"].encode()
        assert partition_of.setdefault(record.key, record.partition) == record.partition
    assert blue == {}  # count: none missing, none twice


def test_planning_twice_does_not_duplicate_tasks(settings: BGSettings) -> None:
    settings = seeded(settings, 1_000, chunk_size=300)
    assert service.prepare(settings, SOURCE) == (4, True)
    assert service.prepare(settings, SOURCE) == (4, False)
    assert len(task_table(settings)) == 4
    with db.connect(settings.blue_dsn) as conn:
        slot = conn.execute(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (settings.cdc.slot,)
        ).fetchone()
        identity = conn.execute(
            "SELECT relreplident FROM pg_class WHERE oid = 'legacy_product'::regclass"
        ).fetchone()
    assert slot == ("pgoutput",)
    assert identity == ("f",)


def test_two_workers_share_the_work_and_no_task_runs_twice(settings: BGSettings) -> None:
    settings = seeded(settings, 8_000, chunk_size=250)
    done = bluegreen(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = task_table(settings)
    assert len(rows) == 32
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert all(r["attempts"] == 1 for r in rows)  # nobody ran a task a second time
    workers = Counter(r["worker_id"] for r in rows)
    assert len(workers) == 2 and min(workers.values()) >= 4
    records = read_all(settings.kafka, settings.kafka.topic)
    assert len(records) == 8_000  # every row once: no task produced twice
    assert len({r.value for r in records}) == 8_000


def test_kill_minus_nine_mid_task_then_restart_completes_the_rest(settings: BGSettings) -> None:
    settings = seeded(settings, 40_000, chunk_size=400)
    with db.connect(settings.control_dsn) as conn:
        tasks.ensure_schema(conn)
    proc = spawn(settings, "snapshot", "--workers", "1", "--metrics-port", "-1")
    try:
        deadline = time.monotonic() + 60
        while True:
            states = Counter(r["state"] for r in task_table(settings))
            if states["COMPLETED"] >= 10 and states["IN_PROGRESS"] >= 1:
                break
            assert proc.poll() is None, proc.output()
            assert time.monotonic() < deadline, states
            time.sleep(0.01)
        proc.signal(signal.SIGKILL)  # the CLI and its worker, no chance to clean up
        proc.wait(10)
    finally:
        proc.close()
    before = {r["id"]: r for r in task_table(settings)}
    killed = [r for r in before.values() if r["state"] == "IN_PROGRESS"]
    completed = {i: r for i, r in before.items() if r["state"] == "COMPLETED"}
    assert killed

    done = bluegreen(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    assert done.returncode == 0, done.stdout + done.stderr
    after = {r["id"]: r for r in task_table(settings)}
    assert {r["state"] for r in after.values()} == {"COMPLETED"}
    for task_id, row in completed.items():  # completed work is not run again
        assert after[task_id]["finished_at"] == row["finished_at"]
        assert after[task_id]["attempts"] == 1
    for row in killed:  # the abandoned task was reclaimed after its heartbeat expired
        assert after[row["id"]]["attempts"] == 2
    records = read_all(settings.kafka, settings.kafka.topic)
    ids = {default_codec().decode(r.value)["after"]["id"] for r in records}
    assert ids == set(range(1, 40_001))  # nothing lost (the killed task's rows may repeat)


def test_a_task_that_keeps_failing_ends_dead_and_the_others_complete(settings: BGSettings) -> None:
    settings = seeded(settings, 3_000, chunk_size=500, max_attempts=2)
    # The topic refuses messages over 200 kB; one blue row is bigger than that.
    ensure_topic(
        settings.kafka,
        settings.kafka.topic,
        settings.kafka.partitions,
        config={"max.message.bytes": "200000"},
    )
    with db.connect(settings.blue_dsn) as conn:
        conn.execute(
            "UPDATE legacy_product SET description = %s WHERE id = 1234",
            (os.urandom(150_000).hex(),),
        )
    done = bluegreen(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "retry --dead" in done.stderr
    rows = task_table(settings)
    dead = [r for r in rows if r["state"] == "DEAD"]
    assert len(dead) == 1 and dead[0]["lo"] <= 1234 < dead[0]["hi"], [d["last_error"] for d in dead]
    assert dead[0]["attempts"] == 2
    assert "MSG_SIZE_TOO_LARGE" in dead[0]["last_error"]
    assert dead[0]["produce_errors"] >= 2
    assert all(r["state"] == "COMPLETED" for r in rows if r is not dead[0])

    status = bluegreen(settings, "status")
    assert "DEAD" in status.stdout and "MSG_SIZE_TOO_LARGE" in status.stdout

    retried = bluegreen(settings, "snapshot", "retry", "--dead")
    assert "1 DEAD tasks are READY again" in retried.stdout
    with db.connect(settings.control_dsn) as conn:
        assert tasks.counts(conn).by_state.get("READY") == 1


def test_resnapshot_of_keys_sends_rows_and_absent_keys(settings: BGSettings) -> None:
    settings = seeded(settings, 300, chunk_size=1_000)
    service.prepare(settings, SOURCE)
    with db.connect(settings.blue_dsn) as conn:
        sku, channel = conn.execute(
            "SELECT sku, channel FROM legacy_product WHERE id = 7"
        ).fetchone()  # type: ignore[misc]
    with db.connect(settings.control_dsn) as conn:
        conn.execute("UPDATE bluegreen.snapshot_task SET state = 'COMPLETED'")
        conn.commit()
        tasks.add_key_task(conn, SOURCE.qualified, [(sku, channel), ("NOPE-1", "GB")])
    report = service.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
    assert report.ok
    events = [
        default_codec().decode(r.value) for r in read_all(settings.kafka, settings.kafka.topic)
    ]
    assert sorted((e["op"], (e["after"] or e["key"])["sku"]) for e in events) == [
        ("d", "NOPE-1"),
        ("r", sku),
    ]
    absent = next(e for e in events if e["op"] == "d")
    assert absent["key"] == {"sku": "NOPE-1", "channel": "GB"} and absent["before"] is None
    assert absent["source"]["snapshot"] is True and absent["source"]["seq"] == 0


def test_slot_must_exist_before_a_worker_snapshots(settings: BGSettings) -> None:
    settings = seeded(settings, 10)
    worker = SnapshotWorker(settings, SOURCE, worker_id="w")
    with pytest.raises(BluegreenError, match="no replication slot"):
        worker.run()
    with psycopg.connect(settings.blue_dsn.get_secret_value()) as conn:
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall()
    assert slots == []  # neither the CDC slot nor a snapshot's temporary one
