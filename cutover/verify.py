"""Verification: is green exactly transform(blue)? Every key, not a sample.

Blue is read at a consistent snapshot (a temporary slot's, like a snapshot
worker's) and green in the same key order; both are cut into ranges of aggregates
(the catalog's SKUs). Green's side is digested by PostgreSQL, one md5 per aggregate
and table (``cutover.canonical``); blue's side is transformed and digested alike here
(its upper half by a helper process in a full pass, ``cutover.verify_parallel``). A
range whose every digest agrees is done; a range that differs is read from green
row by row and compared field by field, and every difference is named: missing
(blue has it, green does not), extra (green has it, blue does not), different (the
fields that differ), unmappable (a blue row the transform rejects).

What is compared is the domain's (``Domain.verify``): which green tables and
fields, what one aggregate's blue rows should become, where green's versioned
records are. The queries are built here from those declarations.

With CDC running, a fence written after the snapshot and applied on every
partition proves green holds every change up to the snapshot; a SKU that green
changed after the snapshot cannot be judged against it and is checked again in
the next round, on a newer snapshot.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import psycopg
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from cutover import verify_parallel as parallel
from cutover import verify_ranges as ranges
from cutover.canonical import digest_query
from cutover.differences import Aggregate, Difference, VerifyReport
from producers.snapshot.reader import BlueSnapshot
from schemas.domain import Domain, Expected, VerifySpec
from schemas.envelope import Version

# Green's texts as canonical.py writes them: ISO dates, in UTC.
_GREEN_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO"
_HELPER_TIMEOUT_S = 300.0  # the blue helper's longest silence (it sends every 2,000 keys)

__all__ = [
    "Difference",
    "VerifyReport",
    "blue_aggregates",
    "blue_query",
    "blue_snapshot",
    "classify",
    "compare",
    "keep_figures",
    "verify",
]


# -- the two sides, in aggregate order -----------------------------------------------------------


def blue_query(domain: Domain, only: Collection[Any] | None = None) -> sql.Composed:
    """Blue's rows as a decoded envelope carries them, in aggregate then natural-key order;
    with `only`, those of these aggregates alone (an index lookup, not a scan)."""
    where: sql.Composable = sql.SQL("")
    if only is not None:
        # A literal: a snapshot's replication connection speaks the simple protocol only.
        where = sql.SQL("WHERE {}::text = ANY({}::text[])").format(
            sql.Identifier(domain.source.aggregate_key), sql.Literal(sorted(map(str, only)))
        )
    return parallel.blue_select(domain, where)


def blue_aggregates(
    rows: Iterable[Sequence[Any]], domain: Domain
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Blue's rows (in aggregate order) grouped per aggregate, as dicts by column."""
    names, key = domain.source.names, domain.source.aggregate_key
    current: str | None = None
    group: list[dict[str, Any]] = []
    for values in rows:
        row = dict(zip(names, values, strict=True))
        if row[key] != current:
            if current is not None:
                yield current, group
            current, group = row[key], []
        group.append(row)
    if current is not None:
        yield current, group


# -- one round ---------------------------------------------------------------------------------


def blue_snapshot(settings: Settings, domain: Domain) -> BlueSnapshot:
    """A consistent view of blue's source table (a temporary slot's), as every
    verification reads blue."""
    return BlueSnapshot(
        settings.blue_dsn, domain.source, create_timeout_s=settings.snapshot.slot_create_timeout_s
    )


def _round(
    settings: Settings,
    domain: Domain,
    range_size: int,
    only: Collection[Any] | None,
    wait_for: Callable[[int], None] | None,
) -> tuple[VerifyReport, list[Aggregate]]:
    snapshot = blue_snapshot(settings, domain)
    try:
        version = snapshot.version
        if wait_for is not None:
            wait_for(version.lsn)  # green holds every change before the snapshot
        sides = None
        if only is None:  # a full pass: blue's upper half on a second core
            sides = parallel.blue_sides(settings.blue_dsn, domain, snapshot, _HELPER_TIMEOUT_S)
        if sides is None:
            blue = blue_aggregates(snapshot.stream(blue_query(domain, only)), domain)
            return compare(settings, domain, blue, version, only=only, range_size=range_size)
        return _compare(
            settings,
            domain,
            sides,
            version,
            only=None,
            range_size=range_size,
            expected_again=functools.partial(parallel.expected_again, snapshot, domain),
        )
    finally:
        snapshot.close()


def compare(
    settings: Settings,
    domain: Domain,
    blue: Iterator[tuple[str, list[dict[str, Any]]]],
    version: Version,
    *,
    only: Collection[Any] | None,
    range_size: int = 5_000,
) -> tuple[VerifyReport, list[Aggregate]]:
    """Compare blue's aggregates (as of `version`, in key order) with green as it is now;
    the caller made sure green holds every change before `version`. Returns the figures
    and the aggregates that differ, each with the newest version green holds for it."""
    return _compare(settings, domain, blue, version, only=only, range_size=range_size)


def _compare(
    settings: Settings,
    domain: Domain,
    blue: Iterator[tuple[str, list[dict[str, Any]]] | parallel.Digested],
    version: Version,
    *,
    only: Collection[Any] | None,
    range_size: int,
    expected_again: Callable[[list[Any]], dict[Any, Expected]] | None = None,
) -> tuple[VerifyReport, list[Aggregate]]:
    spec = domain.verify
    report = VerifyReport(snapshot_lsn=version.lsn)
    differing: list[Aggregate] = []
    with db.connect(settings.green_dsn, options=_GREEN_OPTIONS) as green:
        green.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        params = {"only": sorted(map(str, only))} if only is not None else None
        with ExitStack() as stack:
            digests = []
            for index, table in enumerate(spec.tables):
                cursor = stack.enter_context(green.cursor(name=f"verify_{index}"))
                cursor.itersize = 10_000
                cursor.execute(digest_query(table, only is not None), params)
                digests.append(iter(cursor))
            window: list[ranges.Summary] = []
            for state in ranges.merge(spec, blue, digests, version):
                ranges.count(report, state, spec.tables)
                window.append(state)
                if len(window) >= range_size:
                    differing += ranges.check_range(green, window, report, domain, expected_again)
                    window = []
            if window:
                differing += ranges.check_range(green, window, report, domain, expected_again)
        _newest_versions(green, spec, domain.source.aggregate_key, differing)
    return report, differing


def _newest_versions(
    green: psycopg.Connection[Any], spec: VerifySpec, key: str, states: list[Aggregate]
) -> None:
    """The newest version green holds per aggregate, tombstones included (the domain's
    versioned records)."""
    if not states:
        return
    query = sql.SQL("SELECT {key}, max(src_lsn) FROM {records} WHERE {key} = ANY(%s) GROUP BY 1")
    rows = green.execute(
        query.format(key=sql.Identifier(key), records=sql.Identifier(*spec.records)),
        ([s.sku for s in states],),
    ).fetchall()
    newest: dict[Any, int] = {key: int(lsn) for key, lsn in rows}
    for state in states:
        state.newest_lsn = max(state.newest_lsn, newest.get(state.sku, 0))


def verify(
    settings: Settings,
    domain: Domain,
    *,
    range_size: int = 5_000,
    rounds: int = 3,
    wait_for: Callable[[int], None] | None = None,
    only: Collection[Any] | None = None,
) -> VerifyReport:
    """Compare transform(blue) with green: every aggregate, or those in `only`.
    `wait_for(lsn)` must return once green applied every blue change before `lsn`
    (cutover's fence); without it, blue must be quiet.

    An aggregate green changed after the round's snapshot cannot be judged against it
    and is checked again, on a new snapshot of the differing aggregates alone, up to
    `rounds`; what still moves then is reported unsettled (``cutover.verify_hold``
    judges those while blue's writers are held off them).
    """
    started = time.monotonic()
    report = VerifyReport(snapshot_lsn=0)
    whole: VerifyReport | None = None
    for attempt in range(1, rounds + 1):
        report, differing = _round(settings, domain, range_size, only, wait_for)
        whole = whole or report
        report.rounds = attempt
        classify(report, differing, domain)
        if not report.unsettled:
            break
        only = {s.sku for s in differing}
    if whole is not None:
        keep_figures(report, whole)
    report.seconds = time.monotonic() - started
    return report


def keep_figures(report: VerifyReport, whole: VerifyReport) -> None:
    """Keep the first round's figures: later rounds recheck a few aggregates."""
    report.ranges, report.skus = whole.ranges, whole.skus
    report.products, report.listings = whole.products, whole.listings
    report.blue_rows = whole.blue_rows
    report.ranges_differing = whole.ranges_differing


def classify(report: VerifyReport, differing: list[Aggregate], domain: Domain) -> None:
    """Differences of aggregates green holds at or before the snapshot are real; the
    others changed in green since, and are unsettled."""
    settled = [s for s in differing if s.newest_lsn <= report.snapshot_lsn]
    report.differences = [
        d for s in settled for d in s.differences(domain.verify, domain.source.table)
    ]
    report.unsettled = [s.sku for s in differing if s.newest_lsn > report.snapshot_lsn]
