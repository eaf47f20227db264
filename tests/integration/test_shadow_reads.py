"""Shadowed reads against the real services: matching reads are compared, a mismatch
injected into green is counted, logged with its key and blocks the cutover, and a full
queue drops shadows without holding any read back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from structlog.testing import capture_logs

from bluegreen import control
from bluegreen.app.demo.load import ReadLoad, WriteLoad
from bluegreen.control import ShadowCounts
from bluegreen.core import db
from bluegreen.core.config import Settings, ShadowSettings
from bluegreen.core.metrics import Metrics
from cutover import shadow_gate, switch
from cutover.router import TrafficRouter
from cutover.shadow import Job, ShadowReads
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed
from tests.integration.test_cutover import configured, router_color, served_by
from tests.support.cdc import running_cdc, wait_confirmed
from tests.support.cli import bluegreen
from tests.support.consume import running_consumer, wait_drained
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Quick rechecks (a real difference outlives them), and a gate that wants 20 comparisons.
SHADOW = ShadowSettings(
    recheck_attempts=2, recheck_delay_s=0.2, flush_interval_s=0.2, gate_min_compared=20
)


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Settings]:
    """Blue seeded and snapshotted, CDC and the consumer running, green caught up."""
    settings = configured(settings).model_copy(update={"shadow": SHADOW})
    with ExitStack() as stack:
        stack.enter_context(running_cdc(settings))
        stack.enter_context(running_consumer(settings))
        assert snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=2).ok
        wait_confirmed(settings)
        wait_drained(settings)
        yield settings


def router(settings: Settings, **kwargs: Any) -> TrafficRouter:
    return TrafficRouter(
        settings.control_dsn,
        {"blue": settings.blue_dsn, "green": settings.green_dsn},
        domain=CATALOG,
        **kwargs,
    )


def skus(settings: Settings, count: int) -> list[str]:
    with db.connect(settings.blue_dsn) as conn:
        query = "SELECT DISTINCT sku FROM legacy_product ORDER BY sku LIMIT %s"
        return [r[0] for r in conn.execute(query, (count,))]


def test_matching_reads_count_and_a_mismatch_in_green_blocks_cutover(pipeline: Settings) -> None:
    keys = skus(pipeline, 30)
    metrics = Metrics()
    with capture_logs() as logs:
        shadowed = router(pipeline, shadow=SHADOW, shadow_ratio=1.0, metrics=metrics.shadow)
        try:
            for key in keys:
                color, answer = shadowed.read(key)
                assert color == "blue" and answer[SOURCE.table], key
            shadow = shadowed.shadow
            assert shadow is not None
            wait_until(lambda: shadow.counts.compared == len(keys), "every read compared")
            assert shadow.counts == ShadowCounts(compared=30)
            gate = wait_until(
                lambda: (g := shadow_gate.shadow_reads_matched(pipeline)).ok and g, "gate passes"
            )
            assert gate.figure.startswith("30 compared, 0 mismatched, 0 dropped"), gate.figure

            # One product's field changed behind the pipeline's back in green only.
            corrupted = keys[7]
            with db.connect(pipeline.green_dsn) as conn:
                conn.execute(
                    "UPDATE catalog.product SET name = 'Corrupted' WHERE sku = %s", (corrupted,)
                )
            before = shadowed.read(corrupted)
            wait_until(lambda: shadow.counts.mismatched == 1, "the mismatch counted")
            assert shadowed.read(corrupted) == before  # the caller gets blue's own answer
            wait_until(lambda: shadow.counts.mismatched == 2, "the second one counted")
        finally:
            shadowed.close()
    assert shadow.counts == ShadowCounts(compared=32, mismatched=2)
    assert metrics.registry.get_sample_value("bluegreen_shadow_reads_mismatches_total") == 2
    assert metrics.registry.get_sample_value("bluegreen_shadow_reads_compared_total") == 32
    lines = [e for e in logs if e["event"] == "shadow read mismatch"]
    assert len(lines) == 2
    line = lines[0]
    assert line["key"] == corrupted and line["tables"] == ["product"]
    assert line["log_level"] == "warning"
    assert "product different: name: blue says" in line["differences"][0]
    assert "green has 'Corrupted'" in line["differences"][0]

    gate = shadow_gate.shadow_reads_matched(pipeline)
    assert not gate.ok and "32 compared, 2 mismatched" in gate.figure, gate.figure
    with pytest.raises(switch.CutoverRefusedError, match="shadow reads matched: 32 compared"):
        switch.cutover(pipeline, CATALOG, timeout_s=30)
    assert router_color(pipeline) == "blue"

    done = bluegreen(pipeline, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)["shadow"]
    assert (status["compared"], status["mismatched"], status["routers"]) == (32, 2, 1)
    assert status["gate_passes"] is False and status["gate_required"] is True


def test_masked_values_stay_out_of_the_mismatch_line(pipeline: Settings) -> None:
    key = skus(pipeline, 1)[0]
    with db.connect(pipeline.green_dsn) as conn:
        conn.execute("UPDATE catalog.channel_listing SET price = 0.5 WHERE sku = %s", (key,))
    masked = SHADOW.model_copy(update={"mask_values": True})
    with capture_logs() as logs:
        shadowed = router(pipeline, shadow=masked, shadow_ratio=1.0)
        try:
            shadowed.read(key)
            shadow = shadowed.shadow
            assert shadow is not None
            wait_until(lambda: shadow.counts.mismatched == 1, "the mismatch counted")
        finally:
            shadowed.close()
    [line] = [e for e in logs if e["event"] == "shadow read mismatch"]
    assert line["key"] == key
    assert all(" price: (values masked)" in d for d in line["differences"]), line
    assert "0.5" not in json.dumps(line, default=str)


def test_shadowed_reads_under_live_writes_match_on_either_color(pipeline: Settings) -> None:
    """Under a write load green trails blue by the replication lag; the rechecks (default
    settings) keep that from counting, before the cutover (green shadowed) and after
    (blue shadowed)."""
    live = pipeline.model_copy(update={"shadow": ShadowSettings(gate_min_compared=20)})
    writes = WriteLoad(live, rate=150)
    reads = ReadLoad(live, skus(live, 300), instances=2, threads=2, shadow_ratio=0.2)
    writes.start()
    reads.start()
    try:
        wait_until(lambda: reads.shadow_counts().compared >= 100, "100 compared", 60)
        report = switch.cutover(live, CATALOG, timeout_s=60)
        assert report.switched, report.as_dict()
        assert next(g for g in report.gates if g.name == "shadow reads matched").ok
        before = reads.shadow_counts().compared
        served_by(reads, "green")
        wait_until(lambda: reads.shadow_counts().compared >= before + 100, "blue shadowed", 60)
    finally:
        writes.stop.set()
        writes.join(10)
        reads.stop()
    counts = reads.shadow_counts()
    assert counts.mismatched == 0 and counts.failed == 0, counts
    assert reads.stats.failed == 0, reads.stats.errors


@pytest.fixture
def blue_only(settings: Settings) -> Settings:
    """Blue seeded, the control tables created, green empty (no catalog tables)."""
    load_seed(settings.blue_dsn, 200, 42, replace=False)
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
    return settings


def test_a_full_queue_drops_shadows_and_every_read_returns(
    blue_only: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()

    def held(self: ShadowReads, job: Job) -> list[Any]:
        entered.set()
        release.wait(30)  # the comparer is stuck: nothing the reads do may wait for it
        return []

    monkeypatch.setattr(ShadowReads, "_check", held)
    keys = skus(blue_only, 60)
    shadowed = router(blue_only, shadow=ShadowSettings(queue_size=1, ratio=1.0))
    try:
        shadowed.read(keys[0])
        assert entered.wait(10)  # the first shadow is in the comparer's hands
        answers = [shadowed.read(key) for key in keys[1:]]
        assert len(answers) == 59 and all(c == "blue" and rows[SOURCE.table] for c, rows in answers)
        shadow = shadowed.shadow
        assert shadow is not None
        assert shadow.queued == 1
        assert shadow.counts == ShadowCounts(dropped=59 - 1)
        release.set()
        wait_until(lambda: shadow.counts.compared == 2, "the held and the queued compared")
    finally:
        release.set()
        shadowed.close()
    with db.connect(blue_only.control_dsn, autocommit=True) as conn:
        window = control.shadow_window(conn, 5)
    assert window is not None and window.clients == 1
    assert window.counts == ShadowCounts(compared=2, dropped=58)


def test_a_failing_shadow_is_counted_and_never_reaches_the_caller(blue_only: Settings) -> None:
    keys = skus(blue_only, 5)
    shadowed = router(blue_only, shadow_ratio=1.0)  # green has no catalog tables
    try:
        answers = [shadowed.read(key) for key in keys]
        assert all(color == "blue" and rows[SOURCE.table] for color, rows in answers)
        shadow = shadowed.shadow
        assert shadow is not None
        wait_until(lambda: shadow.counts.failed == 5, "five failed shadows")
        assert shadow.counts.compared == 0
    finally:
        shadowed.close()
