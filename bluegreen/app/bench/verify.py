"""Full verification throughput: blue seeded, green filled through the pipeline
(snapshot -> Kafka -> `bluegreen consume`), then `verify` of every aggregate, timed."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from bluegreen.app.bench import apply as apply_bench
from bluegreen.core.config import Settings
from cutover.verify import verify
from schemas.domain import load_domain


@dataclass(frozen=True)
class VerifyFigures:
    blue_rows: int
    skus: int
    differences: int  # must be 0: green was filled by the pipeline from blue
    runs_seconds: tuple[float, ...]
    seconds: float  # the median run
    verify_rows_per_second: float  # blue rows / the median run's seconds
    skus_per_second: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(settings: Settings, products: int, runs: int) -> VerifyFigures:
    """Seed `products` blue rows in the caller's scratch databases, fill green, verify
    `runs` times (blue quiet, so no fence is needed)."""
    apply_bench.fill_with_snapshot(settings, products)
    apply_bench.consume_all(settings)
    domain = load_domain(settings.domain)
    reports = [verify(settings, domain) for _ in range(runs)]
    seconds = statistics.median(r.seconds for r in reports)
    last = reports[-1]
    return VerifyFigures(
        blue_rows=last.blue_rows,
        skus=last.skus,
        differences=max(len(r.differences) + len(r.unsettled) for r in reports),
        runs_seconds=tuple(round(r.seconds, 2) for r in reports),
        seconds=round(seconds, 2),
        verify_rows_per_second=round(last.blue_rows / seconds),
        skus_per_second=round(last.skus / seconds),
    )
