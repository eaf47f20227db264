"""What a chaos run leaves: its record, the verdict drawn from it, and the evidence of
a failing run (its record, the differing keys' story, the stack's logs)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bluegreen.app.chaos import check
from bluegreen.app.chaos.schedule import Kind
from bluegreen.app.stack import processes
from bluegreen.app.stack.local import state_paths
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError

_LOG_TAIL_LINES = 300


@dataclass
class RunRecord:
    seed: int
    products: int
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    snapshot_seconds: float | None = None
    snapshot_exit_code: int | None = None
    write_seconds: float = 0.0
    converge_seconds: float | None = None
    differences: int = -1
    differences_sample: list[dict[str, Any]] = field(default_factory=list)
    verify_differences: int = -1
    verify_sample: list[dict[str, Any]] = field(default_factory=list)
    offsets_drained: bool = False
    offsets: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = -1
    ops: dict[str, int] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    evidence: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChaosReport:
    base_seed: int
    products: int
    write_seconds: float
    runs: list[RunRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.ok]

    def faults_by_kind(self) -> dict[str, int]:
        counts = Counter(f["kind"] for r in self.runs for f in r.faults if not f["skipped"])
        return {k.value: counts.get(k.value, 0) for k in Kind}

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_seed": self.base_seed,
            "products": self.products,
            "write_seconds": self.write_seconds,
            "runs": [r.as_dict() for r in self.runs],
            "failed_runs": [r.seed for r in self.failed],
            "faults_by_kind": self.faults_by_kind(),
            "seconds": round(self.seconds, 1),
        }


def summary_line(record: RunRecord) -> str:
    verdict = "converged" if record.ok else "FAILED: " + "; ".join(record.failures)
    took = "-" if record.converge_seconds is None else f"{record.converge_seconds:.1f}s"
    return (
        f"seed {record.seed}: {verdict} (converged in {took}, "
        f"{record.differences} differences, {len(record.unexpected_exits)} unexpected exits, "
        f"run {record.seconds:.0f}s)"
    )


def judge(
    record: RunRecord,
    differences: list[check.Difference],
    *,
    converge_timeout_s: float,
    missing_ops: list[str],
) -> None:
    """The run's figures as failures (appended to ``record.failures``); none: it converged."""
    if record.differences:
        kinds = Counter(f"{d.kind} {d.table}" for d in differences)
        detail = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        record.failures.append(
            f"green != transform(blue) after {converge_timeout_s:.0f}s: {detail}"
        )
    if record.verify_differences:
        record.failures.append(f"bluegreen verify: {record.verify_differences} differences")
    if not record.offsets_drained:
        behind = [o for o in record.offsets if not o["drained"]]
        record.failures.append(f"offsets not drained on {len(behind)} partitions: {behind}")
    if record.dead_letters:
        record.failures.append(f"{record.dead_letters} dead letters")
    if record.unexpected_exits:
        names = Counter(e["service"] for e in record.unexpected_exits)
        record.failures.append(
            "unexpected exits: " + ", ".join(f"{k} x{n}" for k, n in sorted(names.items()))
        )
    if missing_ops:
        record.failures.append(f"the load never managed: {', '.join(missing_ops)}")


def keep_evidence(settings: Settings, folder: Path, record: RunRecord, skus: list[str]) -> None:
    """What a failing run leaves behind: its record, the differing keys, the logs."""
    (folder / "run.json").write_text(json.dumps(record.as_dict(), indent=2, default=str) + "\n")
    if skus:
        try:
            found = check.evidence(settings, skus)
        except (psycopg.Error, BluegreenError) as exc:
            found = {"error": f"{type(exc).__name__}: {exc}"}
        (folder / "differences.json").write_text(
            json.dumps(found, indent=2, default=str, ensure_ascii=False) + "\n"
        )
    stack_logs = folder / "stack-logs"
    stack_logs.mkdir(exist_ok=True)
    for name, path in state_paths(settings.stack.state_dir).items():
        (stack_logs / f"{name}.log").write_text(processes.tail_lines(path, _LOG_TAIL_LINES) + "\n")
