"""Every Prometheus metric of bluegreen, defined once, with its unit in the name.

Metrics are created against an injected registry (tests use a fresh one; services
use one per process) and exposed on ``/metrics`` by ``serve``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.core.config import MetricsSettings

# Latency histograms: fine below a second, where the targets are (p99 <= 250 ms).
LATENCY_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.050, 0.075, 0.100, 0.150,
    0.200, 0.250, 0.300, 0.400, 0.500, 0.750, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


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
        self.dependency_up = Gauge(
            "bluegreen_dependency_up",
            "1 while the service reaches the dependency (blue, green, control, kafka), "
            "0 while it retries.",
            ["dependency"],
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
        # -- CDC: blue's capture, and green's while writes are on green --------------------
        self._forward_capture = _capture_metrics(
            r, "cdc", "blue", "the reverse applier's (green's changes written back)"
        )
        self._reverse_capture = _capture_metrics(
            r, "reverse_cdc", "green", "the forward applier's (blue's changes applied)"
        )
        self.reverse_cdc_slot_present = Gauge(
            "bluegreen_reverse_cdc_slot_present",
            "1 while green's reverse slot exists and is streamed, 0 while the service waits.",
            registry=r,
        )
        # -- consumer ------------------------------------------------------------------------
        self.consumer_lag = Gauge(
            "bluegreen_consumer_lag_messages",
            "Messages not yet applied to green: high watermark minus committed offset.",
            ["partition"],
            registry=r,
        )
        self.consumer_applied = Counter(
            "bluegreen_consumer_events_applied_total",
            "Change events applied to green (whatever the version guard decided), by op.",
            ["op"],
            registry=r,
        )
        self.consumer_batch_seconds = Histogram(
            "bluegreen_consumer_batch_apply_seconds",
            "Seconds one batch's green transaction took (stage, upsert, derive, commit).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "bluegreen_end_to_end_latency_seconds",
            "Seconds from a change's commit on blue to the commit of green's transaction "
            "that applied it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dlq_messages = Counter(
            "bluegreen_dlq_messages_total",
            "Messages sent to the dead-letter topic, by the step that refused them.",
            ["step"],
            registry=r,
        )
        self.consumer_last_lsn = Gauge(
            "bluegreen_consumer_last_applied_lsn",
            "The newest blue commit LSN applied to green (any partition).",
            registry=r,
        )
        self.consumer_paused = Gauge(
            "bluegreen_consumer_paused",
            "1 while the consumer pauses its partitions because green refuses writes.",
            registry=r,
        )
        # -- reverse applier (green -> blue, issue 14) ------------------------------------
        self.reverse_applied = Counter(
            "bluegreen_reverse_aggregates_applied_total",
            "Aggregates (e.g. SKUs) the reverse applier wrote into blue, by what it did.",
            ["action"],
            registry=r,
        )
        self.reverse_batch_seconds = Histogram(
            "bluegreen_reverse_batch_apply_seconds",
            "Seconds one reverse batch took: lock, green read, inverse, blue writes, commit.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reverse_latency_seconds = Histogram(
            "bluegreen_reverse_latency_seconds",
            "Seconds from a change's commit on green to the commit of blue's transaction "
            "that applied it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reverse_lag = Gauge(
            "bluegreen_reverse_lag_messages",
            "Reverse-topic messages not yet applied to blue: high watermark minus position.",
            ["partition"],
            registry=r,
        )
        # -- shadowed reads (a process whose read routers shadow, issue 15) ---------------
        self.shadow = _shadow_metrics(r)
        # -- migration (exported by the consumer from the control database) ---------------
        self.migration_phase = Gauge(
            "bluegreen_migration_phase",
            "1 for the migration's current phase (label phase), 0 for the others.",
            ["phase"],
            registry=r,
        )
        self.reads_on_green = Gauge(
            "bluegreen_reads_on_green",
            "1 while the read router sends reads to green, 0 while to blue.",
            registry=r,
        )
        self.router_epoch = Gauge(
            "bluegreen_router_epoch",
            "The read router's epoch: it grows by one at every cutover or rollback.",
            registry=r,
        )
        self.dlq_open = Gauge(
            "bluegreen_dlq_open_messages",
            "Dead letters not replayed yet, superseded ones aside (a cutover gate wants 0).",
            registry=r,
        )
        self.dlq_superseded = Gauge(
            "bluegreen_dlq_superseded_messages",
            "Dead letters not replayed yet whose every key green already holds at a newer "
            "version: `bluegreen dlq replay` skips them; they do not block a cutover.",
            registry=r,
        )
        self.verification = _verify_metrics(r)
        self.consumer_apply_retries = Counter(
            "bluegreen_consumer_apply_retries_total",
            "Batches retried after a transient green failure (connection, deadlock).",
            registry=r,
        )

    def forward_capture(self) -> CaptureMetrics:
        """The metrics of blue's capture (`bluegreen cdc`)."""
        return self._forward_capture

    def reverse_capture(self) -> CaptureMetrics:
        """The metrics of green's capture (`bluegreen reverse-cdc`): same shape, own names."""
        return self._reverse_capture


@dataclass(frozen=True)
class CaptureMetrics:
    """One capture direction's families: the capture code is shared, the names are not."""

    events: Counter
    skipped_transactions: Counter
    source_lag_bytes: Gauge
    source_lag_seconds: Gauge
    slot_retained_wal_bytes: Gauge
    confirmed_lsn: Gauge
    commit_to_ack_seconds: Histogram


def _capture_metrics(
    r: CollectorRegistry, name: str, color: str, skipped_origin: str
) -> CaptureMetrics:
    """One capture direction's families, `bluegreen_<name>_*`, reading `color`'s WAL."""
    return CaptureMetrics(
        events=Counter(
            f"bluegreen_{name}_events_total",
            f"Changes captured from {color} and acknowledged by the broker, by op (c, u, d, t, m).",
            ["op"],
            registry=r,
        ),
        skipped_transactions=Counter(
            f"bluegreen_{name}_skipped_transactions_total",
            f"{color.capitalize()} transactions not captured: they carry {skipped_origin} "
            "replication origin, so sending them would loop.",
            registry=r,
        ),
        source_lag_bytes=Gauge(
            f"bluegreen_{name}_source_lag_bytes",
            f"WAL written on {color} that the slot has not confirmed: current LSN - confirmed LSN.",
            registry=r,
        ),
        source_lag_seconds=Gauge(
            f"bluegreen_{name}_source_lag_seconds",
            "Now minus the commit time of the last change acknowledged by the broker "
            "(heartbeats included).",
            registry=r,
        ),
        slot_retained_wal_bytes=Gauge(
            f"bluegreen_{name}_slot_retained_wal_bytes",
            f"WAL {color} keeps for the slot: current LSN - restart LSN.",
            registry=r,
        ),
        confirmed_lsn=Gauge(
            f"bluegreen_{name}_confirmed_lsn",
            "The LSN up to which the slot is confirmed (everything before it is in Kafka).",
            registry=r,
        ),
        commit_to_ack_seconds=Histogram(
            f"bluegreen_{name}_commit_to_ack_seconds",
            f"Seconds from a transaction's commit on {color} to the broker's ack of its last "
            "event.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
    )


@dataclass(frozen=True)
class VerifyMetrics:
    """The continuous verifier's families (`bluegreen verify --follow`)."""

    keys_verified: Counter
    keys_pending: Gauge
    differences: Gauge
    watermark_age_seconds: Gauge
    full_pass_rows_per_second: Gauge


def _verify_metrics(r: CollectorRegistry) -> VerifyMetrics:
    return VerifyMetrics(
        keys_verified=Counter(
            "bluegreen_verify_keys_verified_total",
            "Aggregates compared with transform(blue): full passes and re-verified keys.",
            registry=r,
        ),
        keys_pending=Gauge(
            "bluegreen_verify_keys_pending",
            "Aggregates awaiting re-verification: changed since the watermark (queued by "
            "the applier) or still moving at the last one.",
            registry=r,
        ),
        differences=Gauge(
            "bluegreen_verify_differences",
            "Aggregates green holds differently from transform(blue) at the watermark.",
            registry=r,
        ),
        watermark_age_seconds=Gauge(
            "bluegreen_verify_watermark_age_seconds",
            "Seconds since the blue snapshot the watermark stands for: how stale the "
            "proof that green equals transform(blue) is.",
            registry=r,
        ),
        full_pass_rows_per_second=Gauge(
            "bluegreen_verify_full_pass_rows_per_second",
            "Blue rows per second of the last full verification pass.",
            registry=r,
        ),
    )


@dataclass(frozen=True)
class ShadowMetrics:
    """Shadowed reads of the read routers in this process (``cutover.shadow``)."""

    compared: Counter
    mismatches: Counter
    dropped: Counter
    failed: Counter


def _shadow_metrics(r: CollectorRegistry) -> ShadowMetrics:
    def counter(name: str, text: str) -> Counter:
        return Counter(f"bluegreen_shadow_reads_{name}_total", text, registry=r)

    return ShadowMetrics(
        compared=counter(
            "compared",
            "Shadowed reads whose two answers were compared: the serving color's and the "
            "other's, blue's through the transform.",
        ),
        mismatches=counter(
            "mismatches",
            "Shadowed reads whose answers still differed after every recheck (the "
            "cutover gate `shadow reads matched` wants none).",
        ),
        dropped=counter(
            "dropped", "Reads not shadowed because the comparer's bounded queue was full."
        ),
        failed=counter("failed", "Shadowed reads that could not be compared: a read raised."),
    )


def serve(settings: MetricsSettings, registry: CollectorRegistry) -> int | None:
    """Expose /metrics on settings.host:settings.port; return the bound port (None if off)."""
    if settings.port is None:
        return None
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    return int(server.server_port)


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    if not buckets:
        return None
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def scrape_histogram(text: str, name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of a histogram in a /metrics page (Prometheus text format)."""
    buckets = []
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), float(sample.value)))
    return buckets
