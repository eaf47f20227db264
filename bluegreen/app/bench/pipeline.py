"""The full benchmark: the pipeline against a plain COPY, on the same stack.

(a) baseline: blue's rows copied to a green table with PostgreSQL's COPY (out | in);
(b) the pipeline: snapshot blue -> Kafka -> green (2 snapshot workers, N consumers)
    until green holds every row;
(c) CDC end to end under a steady write load: blue commit -> green commit.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from bluegreen.app.demo.load import WriteLoad
from bluegreen.app.demo.services import ServiceProcess, latency_ms
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.metrics import Metrics
from cutover import fence
from producers.snapshot import service as snapshot
from schemas.catalog import SOURCE
from schemas.catalog.blue import COLUMNS, BlueBase
from schemas.catalog.seed_load import load_seed

_CDC_PORT, _CONSUME_PORT = 19561, 19562


@dataclass
class BenchReport:
    products: int
    baseline_copy_seconds: float = 0.0
    pipeline_snapshot_seconds: float = 0.0
    ratio_to_copy: float = 0.0
    snapshot_produce_seconds: float = 0.0
    consumers: int = 1
    cdc_write_rate: float = 0.0
    cdc_latency_p50_ms: float | None = None
    cdc_latency_p99_ms: float | None = None
    capture_latency_p50_ms: float | None = None
    capture_latency_p99_ms: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def baseline_copy(settings: Settings) -> float:
    """COPY blue's table out and into an identical table in green; seconds."""
    with db.connect(settings.green_dsn) as green:
        green.execute("DROP TABLE IF EXISTS public.legacy_product")
        green.commit()
    engine = create_engine(db.sqlalchemy_url(settings.green_dsn), poolclass=NullPool)
    try:
        BlueBase.metadata.create_all(engine)
    finally:
        engine.dispose()
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    table = sql.Identifier("legacy_product")
    started = time.monotonic()
    with db.connect(settings.blue_dsn) as blue, db.connect(settings.green_dsn) as green:
        copy_out = sql.SQL("COPY (SELECT {columns} FROM {table}) TO STDOUT (FORMAT BINARY)").format(
            columns=columns, table=table
        )
        copy_in = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)").format(
            columns=columns, table=table
        )
        with blue.cursor().copy(copy_out) as out, green.cursor().copy(copy_in) as into:
            for block in out:
                into.write(block)
        green.commit()
    return time.monotonic() - started


def _green_holds_everything(settings: Settings, timeout_s: float) -> None:
    progress = fence.wait_applied(settings, fence.write(settings), timeout_s)
    if not progress.done:
        raise BluegreenError(f"green did not catch up in {timeout_s:.0f}s: {progress.behind}")


def run(
    settings: Settings, products: int, *, write_rate: float, seconds: float, consumers: int
) -> BenchReport:
    report = BenchReport(products=products, cdc_write_rate=write_rate, consumers=consumers)
    load_seed(settings.blue_dsn, products, 42, replace=True)
    report.baseline_copy_seconds = round(baseline_copy(settings), 2)
    with db.connect(settings.green_dsn, autocommit=True) as green:
        green.execute("DROP TABLE public.legacy_product")
    log_dir = settings.stack.state_dir / "logs" / "bench"
    services: list[ServiceProcess] = []
    try:
        cdc = ServiceProcess(settings, "cdc", ["cdc"], log_dir, _CDC_PORT)
        services.append(cdc)
        cdc.wait_metrics()
        appliers = [
            ServiceProcess(settings, f"consume-{i}", ["consume"], log_dir, _CONSUME_PORT + i)
            for i in range(consumers)
        ]
        services += appliers
        for service in services:
            service.wait_metrics()
        time.sleep(2)  # the consumers join the group before the clock starts
        started = time.monotonic()
        snap = snapshot.SnapshotService(settings, SOURCE, Metrics()).run(2)
        if not snap.ok:
            raise BluegreenError(f"the benchmark snapshot did not complete: {snap}")
        report.snapshot_produce_seconds = round(snap.seconds, 2)
        workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # only they exited
        report.peak_rss_mb["snapshot-worker"] = round(workers_kb / 1024, 1)
        _green_holds_everything(settings, timeout_s=3600)
        report.pipeline_snapshot_seconds = round(time.monotonic() - started, 2)
        report.ratio_to_copy = round(
            report.pipeline_snapshot_seconds / report.baseline_copy_seconds, 2
        )

        time.sleep(5)  # the catch-up batches' latencies are recorded before the baseline
        baselines = {s.name: s.metrics() for s in services}
        writes = WriteLoad(settings, write_rate)
        writes.start()
        time.sleep(seconds)
        writes.stop.set()
        writes.join(30)
        _green_holds_everything(settings, timeout_s=300)
        report.cdc_latency_p50_ms, report.cdc_latency_p99_ms = latency_ms(
            appliers, baselines, "bluegreen_end_to_end_latency_seconds"
        )
        report.capture_latency_p50_ms, report.capture_latency_p99_ms = latency_ms(
            [cdc], baselines, "bluegreen_cdc_commit_to_ack_seconds"
        )
    finally:
        for service in services:
            service.stop()
            report.peak_rss_mb[service.name] = round(service.peak_rss_mb, 1)
    return report
