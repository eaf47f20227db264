"""Verification, gates, cutover and rollback against the real services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from bluegreen import control
from bluegreen.app.demo.load import ReadLoad, WriteLoad
from bluegreen.core import db
from bluegreen.core.config import ConsumerSettings, Settings, SnapshotSettings
from bluegreen.core.kafka import ensure_topic, make_producer
from bluegreen.core.metrics import Metrics
from consumers.gauges import MigrationGauges
from cutover import fence, switch, verify_parallel
from cutover.verify import verify
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.cli import bluegreen
from tests.support.consume import running_consumer, wait_drained
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def configured(settings: Settings, rows: int = 3_000) -> Settings:
    load_seed(settings.blue_dsn, rows, 42, replace=False)
    return settings.model_copy(
        update={
            "consumer": ConsumerSettings(batch_max_messages=1_000, retry_backoff_base_s=0.2),
            "snapshot": SnapshotSettings(
                chunk_size=500, heartbeat_interval_s=0.3, heartbeat_timeout_s=2
            ),
            "cdc": settings.cdc.model_copy(update={"heartbeat_interval_s": 1.0}),
        }
    )


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Settings]:
    """Blue seeded and snapshotted, CDC and the consumer running, green caught up."""
    settings = configured(settings)
    with ExitStack() as stack:
        stack.enter_context(running_cdc(settings))
        stack.enter_context(running_consumer(settings))
        report = snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=2)
        assert report.ok
        wait_confirmed(settings)
        wait_drained(settings)
        yield settings


def gate(report: switch.CutoverReport, name: str) -> Any:
    return next(g for g in report.gates if g.name == name)


def router_color(settings: Settings) -> str:
    with db.connect(settings.control_dsn) as conn:
        return control.router(conn).color


def test_cutover_refuses_while_lag_is_not_zero(settings: Settings) -> None:
    settings = configured(settings, 500)
    with running_cdc(settings):  # CDC runs, no consumer: the fence is never applied
        snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
        with pytest.raises(switch.CutoverRefusedError) as refused:
            switch.cutover(settings, CATALOG, timeout_s=2)
    message = str(refused.value)
    assert "lag zero end to end" in message and "applied on 0/6 partitions" in message
    assert router_color(settings) == "blue"


def test_dry_run_names_every_gate_and_switches_nothing(pipeline: Settings) -> None:
    report = switch.cutover(pipeline, CATALOG, timeout_s=30, dry_run=True)
    assert [g.name for g in report.gates] == [
        "snapshot complete",
        "dead-letter queue empty",
        "lag zero end to end",
        "verification clean",
        "shadow reads matched",
    ]
    assert report.passed, report.as_dict()
    assert gate(report, "shadow reads matched").figure.startswith("not required")
    assert gate(report, "snapshot complete").figure == "6/6 tasks COMPLETED"
    assert not report.switched and router_color(pipeline) == "blue"


def test_cutover_refuses_while_a_task_is_dead(pipeline: Settings) -> None:
    with db.connect(pipeline.control_dsn) as conn:
        conn.execute("UPDATE bluegreen.snapshot_task SET state = 'DEAD' WHERE id = 2")
    with pytest.raises(
        switch.CutoverRefusedError, match=r"snapshot complete: 5/6 tasks COMPLETED \(1 DEAD\)"
    ):
        switch.cutover(pipeline, CATALOG, timeout_s=30)
    assert router_color(pipeline) == "blue"


def test_cutover_refuses_while_the_dlq_is_not_empty(pipeline: Settings) -> None:
    ensure_topic(pipeline.kafka, pipeline.kafka.topic, pipeline.kafka.partitions)
    producer = make_producer(pipeline.kafka)
    producer.produce(pipeline.kafka.topic, b"not an envelope", b"POISON")
    assert producer.flush(10) == 0
    wait_drained(pipeline)
    with pytest.raises(
        switch.CutoverRefusedError, match="dead-letter queue empty: 1 open dead letters"
    ):
        switch.cutover(pipeline, CATALOG, timeout_s=30)


def dry_run_gates(settings: Settings, passing: bool) -> dict[str, dict[str, Any]]:
    done = bluegreen(settings, "cutover", "--dry-run", "--json", "--timeout", "60")
    assert done.returncode == (0 if passing else 2), done.stdout + done.stderr
    return {g["name"]: g for g in json.loads(done.stdout)["gates"]}


def listed_letters(settings: Settings) -> dict[str, Any]:
    done = bluegreen(settings, "dlq", "list", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_dead_letters_fixed_in_blue_are_superseded_and_no_longer_block(
    pipeline: Settings,
) -> None:
    """The operator's story: three invalid blue rows go to the DLQ and block the cutover;
    the rows are fixed in blue, the fixes reach green; `dlq replay` re-fails none of the
    stale payloads, counts them as superseded, and the DLQ gate passes."""
    breakages = {  # what the operator saw, and what each does to one US row
        "currency 'EUR' is not channel US's USD": "currency = 'EUR'",
        "does not end with its channel 'US'": "product_type = 'Sneaker'",
        "size_us 42.3 is not a whole or half size": "attributes = '{\"size_us\": 42.3}'",
    }
    with db.connect(pipeline.blue_dsn) as conn:
        rows = conn.execute(
            "SELECT id, currency, product_type, attributes::text FROM legacy_product "
            "WHERE channel = 'US' ORDER BY id LIMIT 3"
        ).fetchall()
        for (row_id, *_), change in zip(rows, breakages.values(), strict=True):
            conn.execute(f"UPDATE legacy_product SET {change} WHERE id = %s", (row_id,))
    wait_confirmed(pipeline)
    wait_drained(pipeline)

    listed = listed_letters(pipeline)
    assert (listed["open"], listed["superseded"]) == (3, 0), listed
    reasons = sorted(letter["reason"] for letter in listed["letters"])
    for expected in breakages:
        assert sum(expected in reason for reason in reasons) == 1, (expected, reasons)
    assert [letter["superseded"] for letter in listed["letters"]] == [False] * 3
    gauges = Metrics()
    MigrationGauges(pipeline, gauges, CATALOG).refresh()
    assert (gauges.dlq_open._value.get(), gauges.dlq_superseded._value.get()) == (3, 0)
    blocked = dry_run_gates(pipeline, passing=False)["dead-letter queue empty"]
    assert not blocked["ok"] and blocked["figure"] == "3 open dead letters, 0 superseded"

    # The operator fixes the rows in blue; CDC and the consumer bring the fixes to green.
    with db.connect(pipeline.blue_dsn) as conn:
        for row_id, currency, product_type, attributes in rows:
            conn.execute(
                "UPDATE legacy_product SET currency = %s, product_type = %s, "
                "attributes = %s::jsonb WHERE id = %s",
                (currency, product_type, attributes, row_id),
            )
    wait_confirmed(pipeline)
    wait_drained(pipeline)

    listed = listed_letters(pipeline)
    assert (listed["open"], listed["superseded"]) == (0, 3), listed
    assert [letter["superseded"] for letter in listed["letters"]] == [True] * 3
    MigrationGauges(pipeline, gauges, CATALOG).refresh()
    assert (gauges.dlq_open._value.get(), gauges.dlq_superseded._value.get()) == (0, 3)

    replayed = bluegreen(pipeline, "dlq", "replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 0 dead letters" in replayed.stdout
    assert "skipped 3 superseded" in replayed.stdout
    wait_drained(pipeline)
    assert len(read_all(pipeline.kafka, pipeline.kafka.dlq_topic)) == 3  # nothing failed again
    assert listed_letters(pipeline) == {"open": 0, "superseded": 0, "letters": []}
    gates_now = dry_run_gates(pipeline, passing=True)
    assert gates_now["dead-letter queue empty"] == {
        "name": "dead-letter queue empty",
        "ok": True,
        "figure": "0 open dead letters, 0 superseded",
    }
    assert all(g["ok"] for g in gates_now.values()), gates_now


def test_cutover_refuses_while_verification_differs(pipeline: Settings) -> None:
    with db.connect(pipeline.green_dsn) as conn:
        conn.execute(
            "UPDATE catalog.channel_listing SET price = price + 1 "
            "WHERE (sku, channel) IN (SELECT sku, channel FROM catalog.channel_listing LIMIT 1)"
        )
    with pytest.raises(
        switch.CutoverRefusedError, match=r"verification clean: 1 differences .*1 different"
    ):
        switch.cutover(pipeline, CATALOG, timeout_s=30)


def test_forced_cutover_needs_a_reason_and_is_audited(pipeline: Settings) -> None:
    with db.connect(pipeline.green_dsn) as conn:
        conn.execute(
            "DELETE FROM catalog.channel_listing "
            "WHERE sku IN (SELECT sku FROM catalog.product LIMIT 1)"
        )
    with pytest.raises(Exception, match="--reason"):
        switch.cutover(pipeline, CATALOG, timeout_s=30, force=True)
    report = switch.cutover(
        pipeline, CATALOG, timeout_s=30, force=True, reason="incident 42: accepted"
    )
    assert report.switched and report.forced
    with db.connect(pipeline.control_dsn) as conn:
        last = control.audit_trail(conn, limit=1)[0]
    assert last.action == "cutover (forced)" and last.reason == "incident 42: accepted"


def test_verification_finds_injected_corruption_and_repair_fixes_it(pipeline: Settings) -> None:
    with db.connect(pipeline.green_dsn) as conn:
        changed = conn.execute(
            "UPDATE catalog.channel_listing SET price = 0.01 WHERE (sku, channel) IN "
            "(SELECT sku, channel FROM catalog.channel_listing ORDER BY sku LIMIT 1) "
            "RETURNING sku, channel"
        ).fetchone()
        missing = conn.execute(
            "DELETE FROM catalog.channel_listing WHERE (sku, channel) IN "
            "(SELECT sku, channel FROM catalog.channel_listing ORDER BY sku DESC LIMIT 1) "
            "RETURNING sku, channel"
        ).fetchone()
        conn.execute(
            "INSERT INTO catalog.product VALUES ('ZZ-EXTRA', 'Boot', 'Ghost', NULL, '{}', 'US', "
            "now(), now(), 1, 1)"
        )
    report = verify(pipeline, CATALOG, wait_for=fence.waiter(pipeline, 30))
    found = {(d.sku, d.kind, d.table, d.channel) for d in report.differences}
    assert found == {
        (changed[0], "different", "channel_listing", changed[1]),
        (missing[0], "missing", "channel_listing", missing[1]),
        ("ZZ-EXTRA", "extra", "product", None),
    }
    different = next(d for d in report.differences if d.kind == "different")
    assert different.fields == ("price",)
    assert report.ranges_differing >= 1

    repaired = bluegreen(pipeline, "verify", "--repair", "--timeout", "60")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "verification clean" in repaired.stdout
    assert verify(pipeline, CATALOG, wait_for=fence.waiter(pipeline, 30)).clean
    with db.connect(pipeline.control_dsn) as conn:
        key_tasks = [t for t in control.task_rows(conn) if t["kind"] == "keys"]
    assert len(key_tasks) == 1 and key_tasks[0]["state"] == "COMPLETED"


def served_by(reads: ReadLoad, color: str, more: int = 100) -> None:
    """Until `more` further reads were served by `color` (the load goes on meanwhile)."""
    start = reads.stats.by_color.get(color, 0)
    wait_until(
        lambda: reads.stats.by_color.get(color, 0) >= start + more,
        f"{more} more reads served by {color}",
    )


def test_cutover_and_rollback_under_load_lose_no_read(pipeline: Settings) -> None:
    writes = WriteLoad(pipeline, rate=150)
    with db.connect(pipeline.blue_dsn) as conn:
        skus = [r[0] for r in conn.execute("SELECT DISTINCT sku FROM legacy_product LIMIT 300")]
    reads = ReadLoad(pipeline, skus, instances=3, threads=2)
    writes.start()
    reads.start()
    try:
        first = switch.cutover(pipeline, CATALOG, timeout_s=60)
        assert first.switched and router_color(pipeline) == "green"
        assert reads.switch_ms(first.router.epoch, first.router.switched_at.timestamp()) < 1000
        served_by(reads, "green")
        router, millis = switch.rollback(pipeline, reason="test")
        assert millis < 1000
        assert reads.switch_ms(router.epoch, router.switched_at.timestamp()) < 1000
        served_by(reads, "blue")
        second = switch.cutover(pipeline, CATALOG, timeout_s=60)
        assert second.switched
        assert reads.switch_ms(second.router.epoch, second.router.switched_at.timestamp()) < 1000
        served_by(reads, "green")
    finally:
        writes.stop.set()
        writes.join(10)
        reads.stop()
    assert reads.stats.failed == 0, reads.stats.errors
    assert reads.stats.by_color.get("green", 0) > 0 and reads.stats.by_color.get("blue", 0) > 0
    with db.connect(pipeline.control_dsn) as conn:
        actions = [e.action for e in reversed(control.audit_trail(conn, limit=10))]
        assert control.phase(conn) == control.Phase.READS_ON_GREEN
    switches = [a for a in actions if a in ("cutover", "rollback")]
    assert switches == ["cutover", "rollback", "cutover"]


def test_rollback_restores_reads_to_blue_and_they_stay_correct(pipeline: Settings) -> None:
    switch.cutover(pipeline, CATALOG, timeout_s=60)
    with db.connect(pipeline.blue_dsn) as conn:
        sku, price = conn.execute(
            "UPDATE legacy_product SET price = 123.45 WHERE id = 10 RETURNING sku, price"
        ).fetchone()  # type: ignore[misc]
    reads = ReadLoad(pipeline, [sku], instances=1, threads=1)
    try:
        switch.rollback(pipeline, reason="test")
        wait_until(lambda: reads.routers[0].color == "blue", "the router learns of the rollback", 5)
        with reads.routers[0].connection() as (color, conn):
            assert color == "blue"
            rows = conn.execute(
                "SELECT price FROM legacy_product WHERE sku = %s AND id = 10", (sku,)
            ).fetchall()
        assert rows == [(price,)]  # blue serves its own, current data
        with pytest.raises(Exception, match="already on blue"):
            switch.rollback(pipeline)
    finally:
        reads.stop()
    with db.connect(pipeline.control_dsn) as conn:
        assert control.phase(conn) == control.Phase.ROLLED_BACK


def test_status_json_reports_the_release_window_figures(pipeline: Settings) -> None:
    done = bluegreen(pipeline, "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["phase"] == "catching-up"
    assert data["reads_on"] == "blue"
    assert data["snapshot"]["tasks_by_state"] == {"COMPLETED": 6}
    assert set(data["consumer_lag"]) == {str(p) for p in range(6)}
    assert data["dlq_open"] == 0
    assert data["slot"]["active"] is True


@pytest.mark.parametrize("split", [False, True], ids=["one-process", "blue-halves"])
def test_verification_names_every_difference_whichever_process_read_blue(
    pipeline: Settings, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    # Split: blue's upper half of the SKUs is read and digested by the helper process.
    monkeypatch.setattr(verify_parallel, "SPLIT_MIN_ROWS", 100 if split else 10**12)
    splits: list[Any] = []
    split_key = verify_parallel.split_key

    def spied(snapshot: Any, domain: Any) -> Any:
        splits.append(split_key(snapshot, domain))
        return splits[-1]

    monkeypatch.setattr(verify_parallel, "split_key", spied)
    clean = verify(pipeline, CATALOG, wait_for=fence.waiter(pipeline, 30), range_size=100)
    assert (splits[0] is not None) == split
    assert clean.clean and clean.ranges_differing == 0
    assert clean.blue_rows == 3_000 and clean.listings == 3_000
    with db.connect(pipeline.green_dsn) as conn:
        first = conn.execute(
            "UPDATE catalog.channel_listing SET stock = stock + 1 WHERE (sku, channel) IN "
            "(SELECT sku, channel FROM catalog.channel_listing ORDER BY sku LIMIT 1) "
            "RETURNING sku, channel"
        ).fetchone()
        last = conn.execute(
            'UPDATE catalog.product SET attributes = attributes || \'{"color": "Pink"}\' '
            "WHERE sku = (SELECT max(sku) FROM catalog.product) RETURNING sku"
        ).fetchone()
        gone = conn.execute(
            "DELETE FROM catalog.channel_listing WHERE (sku, channel) IN "
            "(SELECT sku, channel FROM catalog.channel_listing ORDER BY sku DESC OFFSET 9 LIMIT 1)"
            " RETURNING sku, channel"
        ).fetchone()
    assert first and last and gone
    report = verify(pipeline, CATALOG, wait_for=fence.waiter(pipeline, 30), range_size=100)
    found = {(d.sku, d.kind, d.table, d.channel, d.fields) for d in report.differences}
    assert found == {
        (first[0], "different", "channel_listing", first[1], ("stock",)),
        (last[0], "different", "product", None, ("attributes",)),
        (gone[0], "missing", "channel_listing", gone[1], ()),
    }
    assert (report.skus, report.blue_rows) == (clean.skus, clean.blue_rows)
    assert 1 <= report.ranges_differing <= 3
