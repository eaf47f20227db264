"""Verification: is green exactly transform(blue)? Every key, not a sample.

Blue is read at a consistent snapshot (a temporary slot's, like a snapshot
worker's) and green in the same key order; both are cut into ranges of aggregates
(the catalog's SKUs). A range whose two digests agree is done; inside a range that
differs, green's rows are compared row by row and every difference is named:
missing (blue has it, green does not), extra (green has it, blue does not),
different (the fields that differ), unmappable (a blue row the transform rejects).

What is compared is the domain's (``Domain.verify``): which green tables and
fields, what one aggregate's blue rows should become, where green's versioned
records are. The queries are built here from those declarations.

With CDC running, a fence written after the snapshot and applied on every
partition proves green holds every change up to the snapshot; a SKU that green
changed after the snapshot cannot be judged against it and is checked again in
the next round, on a newer snapshot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bluegreen.core import db
from bluegreen.core.config import Settings
from producers.snapshot.reader import BlueSnapshot
from schemas.domain import Domain, GreenTable, VerifySpec
from schemas.envelope import Version


@dataclass(frozen=True)
class Difference:
    """One difference. `sku` is the aggregate's key (the catalog's SKU), `channel` the
    row's part within it (None for a one-row-per-aggregate table); the names are the
    catalog's because reports and the control database's records carry them."""

    sku: str
    kind: str  # missing | extra | different | unmappable
    table: str  # a green table's name, or the source table for unmappable rows
    channel: str | None = None
    fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class VerifyReport:
    """Figures of one verification. `skus` counts aggregates, `products` the rows of
    the domain's first green table, `listings` those of the others."""

    snapshot_lsn: int
    ranges: int = 0
    ranges_differing: int = 0
    skus: int = 0
    products: int = 0
    listings: int = 0
    differences: list[Difference] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)  # changed after every snapshot tried
    rounds: int = 1
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences and not self.unsettled

    def keys(self, domain: Domain) -> list[tuple[Any, ...]]:
        """Natural keys to re-snapshot for a repair: all of each differing aggregate's."""
        skus = sorted({d.sku for d in self.differences} | set(self.unsettled))
        return [key for sku in skus for key in domain.verify.repair_keys(sku)]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clean"] = self.clean
        return data


@dataclass
class _Aggregate:
    """What one aggregate should be (from blue) and is (in green), per green table."""

    sku: str
    expected: dict[str, dict[Any, tuple[Any, ...]]] = field(default_factory=dict)
    unmappable: list[str] = field(default_factory=list)
    actual: dict[str, dict[Any, tuple[Any, ...]]] = field(default_factory=dict)
    newest_lsn: int = 0  # newest version green shows for this aggregate

    def digests(self, tables: Sequence[GreenTable], expected: Any, actual: Any) -> None:
        """Feed both sides' digests. Blue's rows the transform rejects are part of the
        expected side (green can never hold them), so their range is always compared."""
        for side, rows in ((expected, self.expected), (actual, self.actual)):
            found = [sorted(rows.get(t.name, {}).items(), key=_part_order) for t in tables]
            rejected = self.unmappable if side is expected else []
            side.update(repr((self.sku, found, rejected)).encode())

    def differences(self, spec: VerifySpec, source_table: str) -> list[Difference]:
        found = [
            Difference(self.sku, "unmappable", source_table, detail=r) for r in self.unmappable
        ]
        for table in spec.tables:
            expected = self.expected.get(table.name, {})
            actual = self.actual.get(table.name, {})
            for part in sorted(set(expected) | set(actual), key=_part_key):
                found += _compare(
                    self.sku,
                    table,
                    part,
                    expected=expected.get(part),
                    actual=actual.get(part),
                )
        return found


def _part_key(part: Any) -> str:
    return "" if part is None else str(part)


def _part_order(item: tuple[Any, tuple[Any, ...]]) -> str:
    return _part_key(item[0])


def _compare(
    sku: str,
    table: GreenTable,
    part: Any,
    *,
    expected: tuple[Any, ...] | None,
    actual: tuple[Any, ...] | None,
) -> list[Difference]:
    if expected == actual:
        return []
    if actual is None:
        return [Difference(sku, "missing", table.name, part)]
    if expected is None:
        return [Difference(sku, "extra", table.name, part)]
    names = table.fields
    fields = tuple(n for n, e, a in zip(names, expected, actual, strict=True) if e != a)
    detail = "; ".join(
        f"{n}: blue says {e!r}, green has {a!r}"
        for n, e, a in zip(names, expected, actual, strict=True)
        if e != a
    )
    return [Difference(sku, "different", table.name, part, fields, detail[:500])]


# -- the two sides, in aggregate order -----------------------------------------------------------


def _blue_query(domain: Domain) -> sql.Composed:
    """Blue's rows as a decoded envelope carries them, in aggregate then natural-key order."""
    source = domain.source
    order = (source.aggregate_key, *(k for k in source.natural_key if k != source.aggregate_key))
    return sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        source.plain_select(), source.table_sql, sql.SQL(", ").join(map(sql.Identifier, order))
    )


def _blue_aggregates(
    snapshot: BlueSnapshot, domain: Domain
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    names, key = domain.source.names, domain.source.aggregate_key
    current: str | None = None
    rows: list[dict[str, Any]] = []
    for values in snapshot.stream(_blue_query(domain)):
        row = dict(zip(names, values, strict=True))
        if row[key] != current:
            if current is not None:
                yield current, rows
            current, rows = row[key], []
        rows.append(row)
    if current is not None:
        yield current, rows


def _grouped(cursor: Iterator[tuple[Any, ...]]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    current: str | None = None
    rows: list[tuple[Any, ...]] = []
    for row in cursor:
        if row[0] != current:
            if current is not None:
                yield current, rows
            current, rows = row[0], []
        rows.append(row)
    if current is not None:
        yield current, rows


def _actual(state: _Aggregate, table: GreenTable, rows: list[tuple[Any, ...]]) -> None:
    held = state.actual.setdefault(table.name, {})
    for row in rows:
        values = row[:-1]
        held[None if table.part is None else values[table.part]] = (
            table.normalize(values) if table.normalize else tuple(values)
        )
        state.newest_lsn = max(state.newest_lsn, row[-1])


def _merge(
    spec: VerifySpec,
    blue: Iterator[tuple[str, list[dict[str, Any]]]],
    green: list[Iterator[tuple[str, list[tuple[Any, ...]]]]],
    version: Version,
) -> Iterator[_Aggregate]:
    """One _Aggregate per key found on either side, in key order (a k-way merge)."""
    sources: list[Iterator[tuple[str, Any]]] = [blue, *green]
    heads: list[tuple[str, Any] | None] = [next(s, None) for s in sources]
    while any(h is not None for h in heads):
        key = min(h[0] for h in heads if h is not None)
        state = _Aggregate(key)
        for index, head in enumerate(heads):
            if head is None or head[0] != key:
                continue
            if index == 0:
                expected = spec.expected(head[1], version)
                state.expected, state.unmappable = expected.rows, expected.unmappable
            else:
                _actual(state, spec.tables[index - 1], head[1])
            heads[index] = next(sources[index], None)
        yield state


# -- one round ---------------------------------------------------------------------------------


def _round(
    settings: Settings,
    domain: Domain,
    range_size: int,
    only: set[str] | None,
    wait_for: Callable[[int], None] | None,
) -> tuple[VerifyReport, list[_Aggregate]]:
    spec = domain.verify
    snapshot = BlueSnapshot(
        settings.blue_dsn, domain.source, create_timeout_s=settings.snapshot.slot_create_timeout_s
    )
    try:
        snapshot_version = snapshot.version
        if wait_for is not None:
            wait_for(snapshot_version.lsn)  # green holds every change before the snapshot
        report = VerifyReport(snapshot_lsn=snapshot_version.lsn)
        differing: list[_Aggregate] = []
        with db.connect(settings.green_dsn, options="-c TimeZone=UTC") as green:
            green.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            params = {"only": sorted(only)} if only is not None else None
            with ExitStack() as stack:
                cursors = []
                for index, table in enumerate(spec.tables):
                    cursor = stack.enter_context(green.cursor(name=f"verify_{index}"))
                    cursor.itersize = 5_000
                    cursor.execute(table.query(only is not None), params)
                    cursors.append(_grouped(cursor))
                blue = _blue_aggregates(snapshot, domain)
                if only is not None:
                    blue = ((key, rows) for key, rows in blue if key in only)
                window: list[_Aggregate] = []
                first = spec.tables[0].name
                for state in _merge(spec, blue, cursors, snapshot_version):
                    report.skus += 1
                    report.products += len(state.actual.get(first, {}))
                    report.listings += sum(
                        len(rows) for name, rows in state.actual.items() if name != first
                    )
                    window.append(state)
                    if len(window) >= range_size:
                        differing += _check_range(window, report, domain)
                        window = []
                if window:
                    differing += _check_range(window, report, domain)
            _newest_versions(green, spec, domain.source.aggregate_key, differing)
    finally:
        snapshot.close()
    return report, differing


def _newest_versions(
    green: psycopg.Connection[Any], spec: VerifySpec, key: str, states: list[_Aggregate]
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


def _check_range(
    window: list[_Aggregate], report: VerifyReport, domain: Domain
) -> list[_Aggregate]:
    report.ranges += 1
    expected, actual = hashlib.blake2b(), hashlib.blake2b()
    for state in window:
        state.digests(domain.verify.tables, expected, actual)
    if expected.digest() == actual.digest():
        return []
    report.ranges_differing += 1
    return [s for s in window if s.differences(domain.verify, domain.source.table)]


def verify(
    settings: Settings,
    domain: Domain,
    *,
    range_size: int = 5_000,
    rounds: int = 3,
    wait_for: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Compare transform(blue) with green. `wait_for(lsn)` must return once green applied
    every blue change before `lsn` (cutover's fence); without it, blue must be quiet."""
    started = time.monotonic()
    only: set[str] | None = None
    report = VerifyReport(snapshot_lsn=0)
    for attempt in range(1, rounds + 1):
        current, differing = _round(settings, domain, range_size, only, wait_for)
        if only is not None:
            # Keep the whole-catalog figures of the first round; later rounds recheck a few.
            current.ranges, current.skus = report.ranges, report.skus
            current.products, current.listings = report.products, report.listings
            current.ranges_differing = report.ranges_differing
        report = current
        report.rounds = attempt
        settled = [s for s in differing if s.newest_lsn <= report.snapshot_lsn]
        moving = [s for s in differing if s.newest_lsn > report.snapshot_lsn]
        report.differences = [
            d for s in settled for d in s.differences(domain.verify, domain.source.table)
        ]
        report.unsettled = [s.sku for s in moving]
        if not moving:
            break
        only = {s.sku for s in moving} | {s.sku for s in settled}
    report.seconds = time.monotonic() - started
    return report
