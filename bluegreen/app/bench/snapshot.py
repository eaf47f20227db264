"""Snapshot produce throughput: blue rows into Kafka with 1 and 2 workers."""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

from bluegreen import control
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.snapshot import service
from schemas.catalog import SOURCE
from schemas.catalog.seed_load import load_seed


@dataclass(frozen=True)
class SnapshotFigures:
    workers: int
    rows: int
    command_seconds: float  # plan, start workers, produce, all acknowledged, workers gone
    produce_seconds: float  # first task claimed to last task acknowledged
    rows_per_second: float  # rows / produce_seconds
    peak_worker_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_once(settings: Settings, rows: int, workers: int) -> SnapshotFigures:
    """One snapshot of `rows` seed rows in scratch databases the caller provides."""
    load_seed(settings.blue_dsn, rows, 42, replace=True)
    started = time.monotonic()
    report = service.SnapshotService(settings, SOURCE, Metrics()).run(workers)
    command = time.monotonic() - started
    if not report.ok:
        raise RuntimeError(f"the benchmark snapshot did not complete: {report}")
    with db.connect(settings.control_dsn) as conn:
        produce = control.produce_seconds(conn) or command
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return SnapshotFigures(
        workers=workers,
        rows=report.rows,
        command_seconds=command,
        produce_seconds=produce,
        rows_per_second=report.rows / produce,
        peak_worker_rss_mb=peak_kb / 1024,
    )
