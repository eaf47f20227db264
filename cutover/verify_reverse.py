"""Reverse verification: does blue hold exactly inverse(green)? Every key, not a sample.

Once writes are on green, blue must hold what the reverse applier makes of green's
state: for every aggregate key on either side, the domain's inverse of green's state
(given blue's rows) must equal blue's rows on the columns it writes — the fields green
holds (``ReverseSpec.write_columns``). Differences are named per key as verify does
(``cutover/verify.py``'s report): missing (inverse(green) has a row blue lacks), extra
(blue has a row inverse(green) would delete), different (the fields), unmappable
(green holds a state blue cannot hold: the inverse refused it).

Green is read at one REPEATABLE READ snapshot; with the reverse applier running, a
fence written into green's WAL after that snapshot and applied by blue on every
partition proves blue holds every green change before it; blue is read after that.
A key green changed after its snapshot (blue's ``reverse_touched`` says so) is checked
again on a newer snapshot, up to ``rounds``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError, TransformError
from consumers.reverse.blue import ReverseStatements, fence_applied, touched_keys
from consumers.reverse.service import reverse_spec
from cutover.fence import Fence, FenceProgress, partition_count
from cutover.verify import Difference, VerifyReport
from schemas.control import FENCE_PREFIX
from schemas.domain import Domain, ReverseSpec
from schemas.lsn import parse_lsn

_CHUNK = 2_000  # aggregates read per query


class ReverseFenceTimeoutError(BluegreenError):
    """Blue did not apply green's fence on every partition in time."""


def verify_reverse(
    settings: Settings,
    domain: Domain,
    *,
    fence_timeout_s: float | None = 120.0,
    rounds: int = 3,
) -> VerifyReport:
    """Compare inverse(green) with blue. `fence_timeout_s=None`: green is quiet and blue
    caught up, no fence is written."""
    spec = reverse_spec(domain)
    started = time.monotonic()
    only: list[str] | None = None
    report = VerifyReport(snapshot_lsn=0)
    for attempt in range(1, rounds + 1):
        current, differing = _round(settings, spec, only, fence_timeout_s)
        if only is not None:
            current.skus, current.products, current.listings = (
                report.skus,
                report.products,
                report.listings,
            )
        report, report.rounds = current, attempt
        moving = _moved_since(settings, differing, report.snapshot_lsn)
        report.differences = [d for d in differing_list(differing) if d.sku not in moving]
        report.unsettled = sorted(moving)
        if not moving:
            break
        only = sorted(differing)
    report.seconds = time.monotonic() - started
    return report


def differing_list(differing: Mapping[str, list[Difference]]) -> list[Difference]:
    return [d for key in sorted(differing) for d in differing[key]]


def _round(
    settings: Settings, spec: ReverseSpec, only: list[str] | None, fence_timeout_s: float | None
) -> tuple[VerifyReport, dict[str, list[Difference]]]:
    statements = ReverseStatements(spec)
    differing: dict[str, list[Difference]] = {}
    with (
        db.connect(settings.green_dsn) as green,
        db.connect(settings.blue_dsn) as blue,
    ):
        green.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = green.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        snapshot_lsn = parse_lsn(row[0])  # the snapshot is taken by this first query
        keys = only if only is not None else _green_keys(green, spec)
        if fence_timeout_s is not None:
            _fence(settings, fence_timeout_s)
        blue.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        report = VerifyReport(snapshot_lsn=snapshot_lsn)
        held = set(keys) if only is None else set()
        if only is None:
            keys = sorted(held | set(_blue_keys(blue, spec)))
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            found = green.execute(spec.green_query, {"keys": chunk}).fetchall()
            assert spec.aggregates is not None
            states = spec.aggregates(chunk, found)
            cursor = blue.cursor(row_factory=dict_row)
            rows = cursor.execute(statements.select, {"keys": chunk}).fetchall()
            by_key: dict[str, list[dict[str, Any]]] = {key: [] for key in chunk}
            for blue_row in rows:
                by_key[str(blue_row[spec.blue_key])].append(blue_row)
            report.ranges += 1
            before = len(differing)
            for key in chunk:
                report.skus += 1
                report.products += key in held
                report.listings += len(by_key[key])
                found_differences = _compare(spec, key, states[key], by_key[key])
                if found_differences:
                    differing[key] = found_differences
            report.ranges_differing += len(differing) > before
        return report, differing


def _compare(
    spec: ReverseSpec, key: str, state: Any, rows: list[dict[str, Any]]
) -> list[Difference]:
    table = spec.blue_table[1]
    assert spec.inverse is not None
    try:
        wanted = spec.inverse(state, rows)
    except TransformError as exc:
        return [Difference(key, "unmappable", table, detail=str(exc)[:500])]
    part = [c for c in spec.natural_key if c != spec.blue_key]

    def name(row: Mapping[str, Any]) -> str:
        return ", ".join(str(row[c]) for c in part)

    have = {name(row): row for row in rows}
    want = {name(row): row for row in wanted}
    found = []
    for item in sorted(set(have) | set(want), key=str):
        if item not in have:
            found.append(Difference(key, "missing", table, item))
        elif item not in want:
            found.append(Difference(key, "extra", table, item))
        else:
            fields = tuple(c for c in spec.write_columns if have[item][c] != want[item][c])
            if fields:
                detail = "; ".join(
                    f"{c}: green says {want[item][c]!r}, blue has {have[item][c]!r}" for c in fields
                )
                found.append(Difference(key, "different", table, item, fields, detail[:500]))
    return found


def _green_keys(conn: psycopg.Connection, spec: ReverseSpec) -> list[str]:
    schema, table = spec.tables[0]
    query = sql.SQL("SELECT DISTINCT {}::text FROM {}").format(
        sql.Identifier(spec.key_column), sql.Identifier(schema, table)
    )
    return [str(row[0]) for row in conn.execute(query).fetchall()]


def _blue_keys(conn: psycopg.Connection, spec: ReverseSpec) -> list[str]:
    query = sql.SQL("SELECT DISTINCT {}::text FROM {}").format(
        sql.Identifier(spec.blue_key), sql.Identifier(*spec.blue_table)
    )
    return [str(row[0]) for row in conn.execute(query).fetchall()]


def _moved_since(settings: Settings, differing: Iterable[str], snapshot_lsn: int) -> set[str]:
    """Of these keys, those blue's reverse applier wrote from a green change after the
    snapshot: they cannot be judged against it."""
    wanted = set(differing)
    if not wanted:
        return set()
    with db.connect(settings.blue_dsn) as conn:
        touched = touched_keys(conn)
    return {key for key in wanted if touched.get(key, 0) > snapshot_lsn}


def _fence(settings: Settings, timeout_s: float) -> FenceProgress:
    """Write a fence into green's WAL; wait until blue applied it on every partition."""
    fence_id = f"reverse-fence-{uuid.uuid4().hex[:12]}"
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_logical_emit_message(true, %s, %s)::text", (FENCE_PREFIX, fence_id)
        ).fetchone()
    assert row is not None
    lsn = parse_lsn(row[0])
    kafka = settings.kafka.model_copy(update={"topic": settings.kafka.reverse_topic})
    partitions = partition_count(settings.model_copy(update={"kafka": kafka}))
    started = time.monotonic()
    while True:
        with db.connect(settings.blue_dsn, autocommit=True) as conn:
            applied = sorted(fence_applied(conn, settings.kafka.reverse_topic, lsn))
        progress = FenceProgress(
            Fence(fence_id, lsn), partitions, applied, time.monotonic() - started
        )
        if progress.done:
            return progress
        if progress.seconds >= timeout_s:
            raise ReverseFenceTimeoutError(
                f"green's fence {fence_id} applied by blue on {len(applied)} of {partitions} "
                f"partitions after {progress.seconds:.0f}s (behind: {progress.behind}); are "
                "`bluegreen reverse-cdc` and `bluegreen reverse-apply` running?"
            )
        time.sleep(0.05)


def report_keys(report: VerifyReport) -> Sequence[str]:
    """The aggregate keys that differ or kept moving."""
    return sorted({d.sku for d in report.differences} | set(report.unsettled))
