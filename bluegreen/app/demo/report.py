"""The demo's report: its figures, and how latency percentiles are read off the services."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DemoReport:
    products: int
    snapshot_seconds: float = 0.0
    snapshot_rows_per_second: float = 0.0
    catch_up_seconds: float = 0.0
    cdc_latency_p50_ms: float | None = None
    cdc_latency_p99_ms: float | None = None
    capture_latency_p50_ms: float | None = None
    capture_latency_p99_ms: float | None = None
    batch_apply_p99_ms: float | None = None
    follow_full_pass_seconds: float = 0.0  # the continuous verifier's first full pass
    follow_full_pass_skus_per_second: float = 0.0
    cutover_gates_seconds: float = 0.0
    second_cutover_gates_seconds: float = 0.0
    cutover_switch_ms: float = 0.0
    rollback_switch_ms: float = 0.0
    second_cutover_switch_ms: float = 0.0
    reads_total: int = 0
    failed_reads: int = 0
    reads_by_color: dict[str, int] = field(default_factory=dict)
    shadow_reads_compared: int = 0  # reads compared with the other color (through the transform)
    shadow_mismatches: int = 0  # must be 0
    shadow_reads_dropped: int = 0  # not shadowed: the comparer's queue was full
    blue_changes: int = 0
    # The write story (None: skipped, the reverse direction is not installed).
    write_cutover_pause_ms: dict[str, float] | None = None  # p99 and max a write was held
    write_rollback_pause_ms: dict[str, float] | None = None
    second_write_cutover_pause_ms: dict[str, float] | None = None
    writes_total: int = 0
    writes_by_color: dict[str, int] = field(default_factory=dict)
    failed_writes: int = 0
    lost_writes: int = 0  # acknowledged new SKUs missing from blue or green at the end
    reverse_latency_p50_ms: float | None = None  # green commit -> blue commit
    reverse_latency_p99_ms: float | None = None
    verify_differences: int = -1
    verify_reverse_differences: int | None = None  # None: the reverse direction not installed
    verify_seconds: float = 0.0
    verify_rows_per_second: float = 0.0  # blue rows / verify_seconds, the final verification
    final_phase: str = ""
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_report(report: DemoReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
