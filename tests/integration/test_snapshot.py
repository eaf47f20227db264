"""The bulk snapshot against the real broker and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bluegreen import control
from bluegreen.app.stack.local import LocalStack
from bluegreen.core import db
from bluegreen.core.config import Settings as BGSettings
from bluegreen.core.config import SnapshotSettings
from bluegreen.core.errors import BluegreenError, DependencyError
from bluegreen.core.kafka import ensure_topic
from bluegreen.core.metrics import Metrics
from producers.snapshot import service
from producers.snapshot.worker import SnapshotWorker
from schemas.catalog import SOURCE
from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed_load import load_seed
from schemas.codec import default_codec
from tests.conftest import TEST_STACK
from tests.support.cli import bluegreen, spawn
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def seeded(settings: BGSettings, rows: int, **snapshot: Any) -> BGSettings:
    load_seed(settings.blue_dsn, rows, 42, replace=False)
    with db.connect(settings.control_dsn) as conn:  # so a test can watch the task table
        control.ensure_schema(conn)
    fast = {"heartbeat_interval_s": 0.3, "heartbeat_timeout_s": 2.0, "backoff_base_s": 0.1}
    options = SnapshotSettings(**{**fast, **snapshot})
    return settings.model_copy(update={"snapshot": options})


def blue_rows(settings: BGSettings) -> dict[int, dict[str, Any]]:
    with db.connect(settings.blue_dsn) as conn:
        columns = ", ".join(f"{c}::text" if c == "attributes" else c for c in COLUMNS)
        cur = conn.execute(f"SELECT {columns} FROM legacy_product")
        return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in cur}


def resume_completes(
    settings: BGSettings, completed: dict[Any, dict[str, Any]]
) -> dict[Any, dict[str, Any]]:
    """Run `bluegreen snapshot` again: it ends with exit 0 and every task COMPLETED, and the
    tasks completed before it are not run again. Returns the task table by id."""
    done = bluegreen(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    assert done.returncode == 0, done.stdout + done.stderr
    after = {r["id"]: r for r in task_table(settings)}
    assert {r["state"] for r in after.values()} == {"COMPLETED"}
    for task_id, row in completed.items():  # completed work is not run again
        assert after[task_id]["finished_at"] == row["finished_at"]
        assert after[task_id]["attempts"] == 1
    return after


def task_table(settings: BGSettings) -> list[dict[str, Any]]:
    with db.connect(settings.control_dsn) as conn:
        return control.task_rows(conn)


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
    # Enough work (80 tasks) that a worker starting a few seconds after the other still
    # finds tasks to claim on a loaded machine.
    settings = seeded(settings, 40_000, chunk_size=500)
    done = bluegreen(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = task_table(settings)
    assert len(rows) == 80
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert all(r["attempts"] == 1 for r in rows)  # nobody ran a task a second time
    workers = Counter(r["worker_id"] for r in rows)
    assert len(workers) == 2 and min(workers.values()) >= 4
    records = read_all(settings.kafka, settings.kafka.topic)
    assert len(records) == 40_000  # every row once: no task produced twice
    assert len({r.value for r in records}) == 40_000


def test_kill_minus_nine_mid_task_then_restart_completes_the_rest(settings: BGSettings) -> None:
    settings = seeded(settings, 40_000, chunk_size=400)
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
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

    after = resume_completes(settings, completed)
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
        assert control.task_counts(conn).by_state.get("READY") == 1


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
        control.add_key_task(conn, SOURCE.qualified, [(sku, channel), ("NOPE-1", "GB")])
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


# -- riding through faults ---------------------------------------------------------------------


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])  # host:pid:slot


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_processes(parent: int) -> list[int]:
    """The snapshot workers a `bluegreen snapshot` process spawned (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def db_now(settings: BGSettings) -> datetime:
    with db.connect(settings.control_dsn) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def history(settings: BGSettings) -> list[dict[str, Any]]:
    with db.connect(settings.control_dsn) as conn:
        return control.task_attempts(conn)


def states(settings: BGSettings) -> Counter[str]:
    return Counter(r["state"] for r in task_table(settings))


def ids_in_kafka(settings: BGSettings) -> set[int]:
    codec = default_codec()
    records = read_all(settings.kafka, settings.kafka.topic)
    return {codec.decode(r.value or b"")["after"]["id"] for r in records}


def retries(output: str, dependency: str) -> int:
    """Retry lines logged for a dependency: one per attempt, from every process."""
    return output.count(f"{dependency} unreachable; retrying")


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dependency_up(metrics_port: int, dependency: str) -> float | None:
    """bluegreen_dependency_up{dependency} on a running command's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bluegreen_dependency_up" and sample.labels == {
                "dependency": dependency
            }:
                return float(sample.value)
    return None


def local_stack() -> LocalStack:
    if os.environ.get("BLUEGREEN_TEST_STACK") == "external":
        pytest.skip("stops and starts services of the local test stack")
    return LocalStack(TEST_STACK)


def test_a_killed_worker_is_replaced_and_its_task_reclaimed_at_once(settings: BGSettings) -> None:
    # With a two-minute heartbeat timeout, only the parent seeing the process exit can
    # explain a reclaim within seconds.
    settings = seeded(settings, 30_000, chunk_size=500, heartbeat_timeout_s=120.0)
    proc = spawn(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    try:

        def busy_worker() -> str | None:
            rows = task_table(settings)
            if sum(r["state"] == "COMPLETED" for r in rows) < 3:
                return None
            return next((r["worker_id"] for r in rows if r["state"] == "IN_PROGRESS"), None)

        victim = wait_until(busy_worker, "a worker holding a task", 60)
        os.kill(pid_of(victim), signal.SIGSTOP)  # frozen, so what it holds cannot change
        held = {
            r["id"]
            for r in task_table(settings)
            if r["worker_id"] == victim and r["state"] == "IN_PROGRESS"
        }
        killed_at = db_now(settings)
        os.kill(pid_of(victim), signal.SIGKILL)
        assert proc.wait(120) == 0, proc.output()
        output = proc.output()
    finally:
        proc.close()

    assert held
    rows = {r["id"]: r for r in task_table(settings)}
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}
    attempts = history(settings)
    for task_id in held:
        mine = [a for a in attempts if a["task_id"] == task_id]
        killed = next(a for a in mine if a["worker_id"] == victim)
        assert killed["outcome"] == "worker_exited", mine
        assert killed["ended_at"] - killed_at < timedelta(seconds=10), mine  # not 120 s
        assert mine[-1]["outcome"] == "completed" and mine[-1]["worker_id"] != victim
        assert rows[task_id]["attempts"] == 2  # the killed attempt counts
    assert "started again" in output
    assert ids_in_kafka(settings) == set(range(1, 30_001))


def test_workers_of_a_killed_parent_stop_and_a_new_run_resumes(settings: BGSettings) -> None:
    settings = seeded(settings, 30_000, chunk_size=500, heartbeat_timeout_s=120.0)
    proc = spawn(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    workers: list[int] = []
    try:
        wait_until(
            lambda: states(settings)["COMPLETED"] >= 3 and len(worker_processes(proc.pid)) == 2,
            "progress with two workers",
            60,
        )
        workers = worker_processes(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone; its workers are orphaned
        proc.wait(10)
        wait_until(lambda: not any(alive(p) for p in workers), "the orphaned workers to exit", 60)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.close()

    before = {r["id"]: r for r in task_table(settings)}
    assert "IN_PROGRESS" not in {r["state"] for r in before.values()}  # they gave theirs back
    completed = {i: r for i, r in before.items() if r["state"] == "COMPLETED"}
    assert 3 <= len(completed) < len(before)

    resume_completes(settings, completed)
    assert ids_in_kafka(settings) == set(range(1, 30_001))


def test_workers_ride_through_a_broker_restart(settings: BGSettings) -> None:
    stack = local_stack()
    settings = seeded(settings, 30_000, chunk_size=300, heartbeat_timeout_s=60.0)
    port = free_port()
    proc = spawn(settings, "snapshot", "--workers", "2", "--metrics-port", str(port))
    try:
        wait_until(lambda: states(settings)["COMPLETED"] >= 3, "progress", 60)
        assert dependency_up(port, "kafka") == 1
        broker = next(s for s in stack.status() if s.name == "kafka")
        assert broker.pid is not None
        stack.kafka.stop(broker.pid)
        try:
            assert states(settings)["COMPLETED"] < 100  # the outage hits a running snapshot
            # Down for a while: until the workers have retried it a few times.
            wait_until(lambda: retries(proc.output(), "kafka") >= 6, "the workers to retry", 60)
            assert proc.poll() is None, proc.output()
            assert dependency_up(port, "kafka") == 0  # the workers' view, on the parent's port
        finally:
            stack.up()
        wait_until(lambda: dependency_up(port, "kafka") == 1, "the gauge to recover", 60)
        assert proc.wait(180) == 0, proc.output()
        output = proc.output()
    finally:
        proc.close()

    assert retries(output, "kafka") >= 3 and "kafka reachable again" in output
    assert "|FAIL|" not in output  # librdkafka's line per connection attempt stays quiet
    assert "worker process exited" not in output  # no worker died on the way
    rows = task_table(settings)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert {r["attempts"] for r in rows} == {1}  # the outage burnt no attempt
    assert {a["outcome"] for a in history(settings)} == {"completed"}
    assert ids_in_kafka(settings) == set(range(1, 30_001))


def test_a_blue_restart_gives_the_tasks_being_read_back_without_counting(
    settings: BGSettings,
) -> None:
    stack = local_stack()
    settings = seeded(settings, 30_000, chunk_size=300, heartbeat_timeout_s=60.0)
    proc = spawn(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    try:
        wait_until(lambda: states(settings)["COMPLETED"] >= 3, "progress", 60)
        assert stack.clusters["blue"].stop(None)
        try:
            assert states(settings)["COMPLETED"] < 100
            wait_until(lambda: retries(proc.output(), "blue") >= 2, "the workers to retry", 60)
        finally:
            stack.up()
        assert proc.wait(180) == 0, proc.output()
        output = proc.output()
    finally:
        proc.close()

    assert "blue reachable again" in output
    rows = task_table(settings)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert {r["attempts"] for r in rows} == {1}  # interruptions do not count
    interrupted = [a for a in history(settings) if a["outcome"] == "interrupted"]
    assert interrupted and all(a["detail"].startswith("blue: ") for a in interrupted)
    assert ids_in_kafka(settings) == set(range(1, 30_001))


def test_parent_and_workers_ride_through_a_control_restart(settings: BGSettings) -> None:
    stack = local_stack()
    settings = seeded(settings, 30_000, chunk_size=300, heartbeat_timeout_s=60.0)
    proc = spawn(settings, "snapshot", "--workers", "2", "--metrics-port", "-1")
    try:
        wait_until(lambda: states(settings)["COMPLETED"] >= 3, "progress", 60)
        assert stack.clusters["control"].stop(None)
        try:
            wait_until(
                lambda: retries(proc.output(), "control") >= 6,
                "the parent and the workers to retry",
                60,
            )
            assert proc.poll() is None, proc.output()
        finally:
            stack.up()
        assert proc.wait(180) == 0, proc.output()
        output = proc.output()
    finally:
        proc.close()

    assert "worker process exited" not in output
    rows = task_table(settings)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert {r["attempts"] for r in rows} == {1}
    assert ids_in_kafka(settings) == set(range(1, 30_001))


def test_an_unreachable_control_database_is_one_line_after_the_reconnect_timeout(
    settings: BGSettings,
) -> None:
    settings = seeded(settings, 100)
    service.prepare(settings, SOURCE)  # slot and topic exist: only control is missing
    closed = free_port()
    control = f"postgresql://postgres:s3cret@127.0.0.1:{closed}/control"
    broken = settings.model_copy(
        update={
            "control_dsn": SecretStr(control),
            "snapshot": settings.snapshot.model_copy(update={"reconnect_timeout_s": 2.0}),
        }
    )

    worker = SnapshotWorker(broken, SOURCE, worker_id="w7", name="snapshot worker 7")
    started = time.monotonic()
    with pytest.raises(DependencyError) as caught:
        worker.run()
    assert 2.0 <= time.monotonic() - started < 15
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(
        f"snapshot worker 7: control at 127.0.0.1:{closed}/control unreachable for 2s"
    )
    assert "Connection refused" in message

    done = bluegreen(broken, "snapshot", "--workers", "1", "--metrics-port", "-1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("bluegreen snapshot:")]
    assert len(errors) == 1, done.stderr
    assert f"control at 127.0.0.1:{closed}/control unreachable for 2s" in errors[0]
