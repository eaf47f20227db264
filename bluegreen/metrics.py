"""Every Prometheus metric of bluegreen, defined once, with its unit in the name.

Metrics are created against an injected registry (tests use a fresh one; services
use one per process) and exposed on ``/metrics`` by ``serve``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from bluegreen.config import MetricsSettings


class Metrics:
    """The metric families; each service touches the ones it owns."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # -- process-wide --------------------------------------------------------------------
        self.service_info = Gauge(
            "bluegreen_service_up",
            "1 while a bluegreen service runs; label service names it.",
            ["service"],
            registry=r,
        )
        self.kafka_produce_errors = Counter(
            "bluegreen_kafka_produce_errors_total",
            "Messages whose delivery the broker reported as failed, by producer.",
            ["producer"],
            registry=r,
        )
        self.kafka_messages_produced = Counter(
            "bluegreen_kafka_messages_produced_total",
            "Messages acknowledged by the broker, by producer.",
            ["producer"],
            registry=r,
        )
        # -- snapshot ------------------------------------------------------------------------
        self.snapshot_rows = Counter(
            "bluegreen_snapshot_rows_produced_total",
            "Blue rows of COMPLETED snapshot tasks: produced and acknowledged by the broker.",
            registry=r,
        )
        self.snapshot_tasks = Gauge(
            "bluegreen_snapshot_tasks",
            "Snapshot tasks by state (READY, IN_PROGRESS, COMPLETED, ERROR, DEAD).",
            ["state"],
            registry=r,
        )
        self.snapshot_produce_errors = Counter(
            "bluegreen_snapshot_produce_errors_total",
            "Snapshot messages whose delivery failed (the task was retried or went DEAD).",
            registry=r,
        )
        self.snapshot_rows_per_second = Gauge(
            "bluegreen_snapshot_rows_per_second",
            "Snapshot throughput over the last progress interval, rows per second.",
            registry=r,
        )
        # -- CDC -----------------------------------------------------------------------------
        self.cdc_events = Counter(
            "bluegreen_cdc_events_total",
            "Changes captured from blue and acknowledged by the broker, by op (c, u, d, t, m).",
            ["op"],
            registry=r,
        )
        self.cdc_source_lag_bytes = Gauge(
            "bluegreen_cdc_source_lag_bytes",
            "WAL written on blue that the slot has not confirmed: current LSN - confirmed LSN.",
            registry=r,
        )
        self.cdc_source_lag_seconds = Gauge(
            "bluegreen_cdc_source_lag_seconds",
            "Now minus the commit time of the last change acknowledged by the broker "
            "(heartbeats included).",
            registry=r,
        )
        self.cdc_slot_retained_wal_bytes = Gauge(
            "bluegreen_cdc_slot_retained_wal_bytes",
            "WAL blue keeps for the slot: current LSN - restart LSN.",
            registry=r,
        )
        self.cdc_confirmed_lsn = Gauge(
            "bluegreen_cdc_confirmed_lsn",
            "The LSN up to which the slot is confirmed (everything before it is in Kafka).",
            registry=r,
        )
        self.cdc_commit_to_ack_seconds = Histogram(
            "bluegreen_cdc_commit_to_ack_seconds",
            "Seconds from a transaction's commit on blue to the broker's ack of its last event.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "bluegreen_step_seconds",
            "Wall time of one unit of work of a service step, by step.",
            ["step"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )


def serve(settings: MetricsSettings, registry: CollectorRegistry) -> int | None:
    """Expose /metrics on settings.host:settings.port; return the bound port (None if off)."""
    if settings.port is None:
        return None
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    return int(server.server_port)
