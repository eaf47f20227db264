"""Which components a run kills, in which phase and when: a pure function of the seed.

Coverage is guaranteed, not hoped for: a run with seed `s` always kills the fault kinds
at positions `k*s .. k*s+k-1` of a fixed rotation (k = `rotation`, 2 by default), so
any N consecutive seeds inject every kind at least ``floor(k*N / kinds)`` times — 20
runs with the 7 kinds give each one 5 or 6 kills. Random extras come on top. Every run
has at least one fault in the snapshot phase (at most two, unless the rotation itself
draws more) and one in the CDC phase.

A snapshot-phase fault fires at its share of the snapshot: that share of the snapshot's
expected length after its first worker appeared, or once that share of its tasks is
COMPLETED, whichever comes first (so it lands inside the snapshot whatever its speed).
A CDC-phase fault fires at its share of the CDC window (from the snapshot's end to the
end of the writes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    SNAPSHOT_WORKER = "snapshot-worker"  # a worker process spawned by `bluegreen snapshot`
    SNAPSHOT = "snapshot"  # the `bluegreen snapshot` parent
    CDC = "cdc"
    CONSUMER = "consumer"  # one of the two `bluegreen consume`
    KAFKA = "kafka"  # the broker
    GREEN = "green"  # green's postmaster
    BLUE = "blue"  # blue's postmaster


class Phase(StrEnum):
    SNAPSHOT = "snapshot"
    CDC = "cdc"


ALL_KINDS: tuple[Kind, ...] = tuple(Kind)
SNAPSHOT_ONLY = frozenset({Kind.SNAPSHOT_WORKER, Kind.SNAPSHOT})
# Snapshot faults fire between 0 % and 70 % of the tasks completed; CDC faults inside
# the window, away from its edges.
SNAPSHOT_AT = (0.0, 0.7)
CDC_AT = (0.05, 0.85)
DOWN_S = (0.5, 4.0)
# An undisturbed snapshot of 60,000 rows lasts seconds: more faults than this in it would
# find it over (extras go to the CDC phase instead).
MAX_SNAPSHOT_FAULTS = 2


@dataclass(frozen=True)
class Fault:
    kind: Kind
    phase: Phase
    at: float  # the share of its phase (the snapshot, or the CDC window) when it fires
    down_s: float  # how long the component stays down before it is restarted
    target: int  # which consumer (0 or 1) or which live worker (index)

    def describe(self) -> str:
        return f"{self.kind} in {self.phase} at {self.at:.0%}, down {self.down_s:.1f}s"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_kinds(text: str) -> tuple[Kind, ...]:
    """`all`, `none`, or a comma-separated list of kinds."""
    text = text.strip().lower()
    if text == "all":
        return ALL_KINDS
    if text in {"none", ""}:
        return ()
    kinds = []
    for part in text.split(","):
        try:
            kinds.append(Kind(part.strip()))
        except ValueError as exc:
            names = ", ".join(k.value for k in Kind)
            raise ValueError(f"unknown fault kind {part.strip()!r} (known: {names})") from exc
    return tuple(k for k in ALL_KINDS if k in kinds)


def plan(
    seed: int, kinds: Sequence[Kind] = ALL_KINDS, *, rotation: int = 2, extras_max: int = 2
) -> list[Fault]:
    """The faults of the run with this seed, in firing order (see `_firing_order`)."""
    if not kinds:
        return []
    ordered = [k for k in ALL_KINDS if k in kinds]
    anywhere = [k for k in ordered if k not in SNAPSHOT_ONLY]
    rng = random.Random(f"bluegreen-chaos-{seed}")  # noqa: S311 - a test schedule
    chosen = [ordered[(rotation * seed + j) % len(ordered)] for j in range(rotation)]
    in_snapshot = sum(k in SNAPSHOT_ONLY for k in chosen)
    for _ in range(rng.randint(0, extras_max)):
        extra = rng.choice(ordered)
        if extra in SNAPSHOT_ONLY and in_snapshot >= MAX_SNAPSHOT_FAULTS and anywhere:
            extra = rng.choice(anywhere)
        in_snapshot += extra in SNAPSHOT_ONLY
        chosen.append(extra)
    phases = []
    for kind in chosen:
        phase = Phase.SNAPSHOT if kind in SNAPSHOT_ONLY else rng.choice(tuple(Phase))
        if phase == Phase.SNAPSHOT and kind not in SNAPSHOT_ONLY:
            if in_snapshot >= MAX_SNAPSHOT_FAULTS:
                phase = Phase.CDC  # the snapshot is short: room for two faults
            else:
                in_snapshot += 1
        phases.append(phase)
    if Phase.CDC not in phases and anywhere:
        chosen.append(rng.choice(anywhere))
        phases.append(Phase.CDC)
    if Phase.SNAPSHOT not in phases:
        chosen.append(rng.choice(ordered))
        phases.append(Phase.SNAPSHOT)
    faults = [
        Fault(
            kind=kind,
            phase=phase,
            at=round(rng.uniform(*(SNAPSHOT_AT if phase == Phase.SNAPSHOT else CDC_AT)), 3),
            down_s=round(rng.uniform(*DOWN_S), 2),
            target=rng.randrange(2),
        )
        for kind, phase in zip(chosen, phases, strict=True)
    ]
    return sorted(faults, key=_firing_order)


def _firing_order(fault: Fault) -> tuple[bool, int, float]:
    """Snapshot phase first; in it, a worker kill, then a parent kill, then the rest: each
    fault waits out the one before it (down time, restart), and only these two need the
    snapshot still running. Then each phase in the order of `at`."""
    first = (Kind.SNAPSHOT_WORKER, Kind.SNAPSHOT)
    rank = first.index(fault.kind) if fault.kind in first else len(first)
    return (fault.phase != Phase.SNAPSHOT, rank, fault.at)
