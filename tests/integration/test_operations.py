"""What an operator sees: /metrics of running services, status --watch, JSON logs."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.core.config import ConsumerSettings, Settings, SnapshotSettings
from bluegreen.core.metrics import Metrics, serve
from consumers.service import ConsumerService
from producers.snapshot import service as snapshot
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.seed_load import load_seed
from tests.support.cli import bluegreen
from tests.support.consume import wait_drained
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def lags(seen: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in seen.items() if k.startswith("bluegreen_consumer_lag_messages")}


def settled(seen: dict[str, float], partitions: int) -> dict[str, float] | None:
    """The scrape, once it has a lag of 0 for every partition (else None)."""
    lag = lags(seen)
    return seen if len(lag) == partitions and set(lag.values()) == {0.0} else None


def test_metrics_of_a_running_consumer_and_snapshot(settings: Settings) -> None:
    load_seed(settings.blue_dsn, 2_000, 42, replace=False)
    settings = settings.model_copy(
        update={
            "snapshot": SnapshotSettings(chunk_size=500),
            "consumer": ConsumerSettings(batch_max_messages=500),
        }
    )
    snapshot_metrics = Metrics()
    snapshot_port = serve(
        settings.metrics.model_copy(update={"port": free_port()}), snapshot_metrics.registry
    )
    assert snapshot_port
    report = snapshot.SnapshotService(settings, SOURCE, snapshot_metrics).run(workers=2)
    assert report.ok
    seen = scrape(snapshot_port)
    assert seen["bluegreen_snapshot_rows_produced_total"] == 2_000
    assert seen["bluegreen_snapshot_tasks{state=COMPLETED}"] == 4
    assert seen["bluegreen_snapshot_tasks{state=DEAD}"] == 0
    assert seen["bluegreen_snapshot_produce_errors_total"] == 0

    consumer_metrics = Metrics()
    consumer_port = serve(
        settings.metrics.model_copy(update={"port": free_port()}), consumer_metrics.registry
    )
    assert consumer_port
    service = ConsumerService(settings, CATALOG, consumer_metrics)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_drained(settings)
        # The lag gauges are refreshed every lag_interval_s: wait until they say 0 everywhere.
        seen = wait_until(
            lambda: settled(scrape(consumer_port), settings.kafka.partitions),
            "consumer lag gauges at 0 on every partition",
        )
    finally:
        service.request_stop()
        thread.join(30)
    assert seen["bluegreen_consumer_events_applied_total{op=r}"] == 2_000
    assert seen["bluegreen_consumer_batch_apply_seconds_count"] >= 4
    assert 0 < seen["bluegreen_consumer_batch_apply_seconds_sum"] < 60
    assert seen["bluegreen_consumer_paused"] == 0
    assert seen["bluegreen_dlq_open_messages"] == 0
    assert seen["bluegreen_migration_phase{phase=catching-up}"] == 1
    assert seen["bluegreen_reads_on_green"] == 0


def test_status_watch_renders_the_live_view(settings: Settings) -> None:
    load_seed(settings.blue_dsn, 300, 42, replace=False)
    snapshot.SnapshotService(settings, SOURCE, Metrics()).run(workers=1)
    done = bluegreen(settings, "status", "--watch", "--iterations", "1", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in (
        "migration",
        "phase",
        "catching-up",
        "reads served by",
        "blue",
        "snapshot tasks",
        "COMPLETED",
        "consumer lag per partition",
        "open dead letters",
        "CDC source lag (bytes)",
        "last audited actions",
        "snapshot started",
    ):
        assert expected in out, (expected, out)


def test_json_logs_carry_the_operator_fields_and_no_secret(settings: Settings) -> None:
    load_seed(settings.blue_dsn, 300, 42, replace=False)
    done = bluegreen(settings, "--log-format", "json", "snapshot", "--metrics-port", "-1")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(
        r.get("service") == "snapshot" and r.get("event") == "snapshot planned" for r in records
    )
    assert any("worker" in r for r in records)
    secret = settings.blue_dsn.get_secret_value()
    assert secret not in done.stderr + done.stdout
