"""Verification's inner loop: blue's aggregates merged with green's per-aggregate digests,
cut into ranges; a range whose every aggregate's digests agree is done, any other is
compared row by row.

Green's side is digested by PostgreSQL (``cutover.canonical.digest_query``): one row
per aggregate and table (key, md5, newest version, row count) instead of its rows.
Blue's side is transformed here and digested with the same canonical text. Only a
range that differs is read from green row by row (the aggregates of that range, by
key) and compared field by field, exactly as without digests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from cutover.canonical import digest
from cutover.differences import Aggregate, VerifyReport
from cutover.verify_parallel import Digested
from schemas.domain import Domain, Expected, GreenTable, VerifySpec
from schemas.envelope import Version

# One aggregate in one green table, as digested by PostgreSQL.
GreenDigest = tuple[Any, str, int, int]  # key, md5 hex, newest version, rows


@dataclass
class Summary:
    """One aggregate as the digest pass sees it: blue's expected rows, green's digests."""

    sku: str
    blue_rows: int = 0
    expected: Expected | None = None
    digested: Digested | None = None  # blue's side as the helper process digested it
    green: dict[str, GreenDigest] = field(default_factory=dict)

    def agrees(self, tables: Sequence[GreenTable]) -> bool:
        if self.digested is not None:
            if self.digested.unmappable:
                return False
            digests = dict(zip((t.name for t in tables), self.digested.digests, strict=True))
        elif self.expected is not None:
            if self.expected.unmappable:
                return False  # green can never hold a rejected row: always compared
            digests = {name: digest(rows) for name, rows in self.expected.rows.items()}
        else:
            return not self.green
        return all(
            digests.get(name) == (found[1] if (found := self.green.get(name)) else None)
            for name in {*digests, *self.green}
        )


def merge(
    spec: VerifySpec,
    blue: Iterator[tuple[str, list[dict[str, Any]]] | Digested],
    green: Sequence[Iterator[GreenDigest]],
    version: Version,
) -> Iterator[Summary]:
    """One Summary per key found on either side, in key order (a k-way merge)."""
    sources: list[Iterator[Any]] = [blue, *green]
    heads: list[Any] = [next(s, None) for s in sources]
    while True:
        keys = [h[0] for h in heads if h is not None]
        if not keys:
            return
        key = min(keys)
        state = Summary(key)
        for index, head in enumerate(heads):
            if head is None or head[0] != key:
                continue
            if isinstance(head, Digested):
                state.blue_rows, state.digested = head.blue_rows, head
            elif index == 0:
                state.blue_rows = len(head[1])
                state.expected = spec.expected(head[1], version)
            else:
                state.green[spec.tables[index - 1].name] = head
            heads[index] = next(sources[index], None)
        yield state


def count(report: VerifyReport, state: Summary, tables: Sequence[GreenTable]) -> None:
    """The report's figures: aggregates, rows of the first green table, of the others."""
    report.skus += 1
    report.blue_rows += state.blue_rows
    for index, table in enumerate(tables):
        found = state.green.get(table.name)
        if found is None:
            continue
        if index == 0:
            report.products += found[3]
        else:
            report.listings += found[3]


def check_range(
    green: psycopg.Connection[Any],
    window: list[Summary],
    report: VerifyReport,
    domain: Domain,
    expected_again: Callable[[list[Any]], dict[Any, Expected]] | None = None,
) -> list[Aggregate]:
    """The aggregates of a range that differ: none when every digest agrees; otherwise
    the whole range is read from green and compared row by row (blue's side of the
    aggregates a helper process digested is transformed again, `expected_again`)."""
    report.ranges += 1
    spec = domain.verify
    if all(state.agrees(spec.tables) for state in window):
        return []
    report.ranges_differing += 1
    digested = [s.sku for s in window if s.digested is not None]
    again = expected_again(digested) if digested and expected_again else {}
    states = {}
    for summary in window:
        state = Aggregate(summary.sku)
        expected = again.get(summary.sku) if summary.digested else summary.expected
        if summary.digested is not None and expected is None:
            raise RuntimeError(f"aggregate {summary.sku!r} not found again at the snapshot")
        if expected is not None:
            state.expected = expected.rows
            state.unmappable = expected.unmappable
        states[summary.sku] = state
    params = {"only": sorted(map(str, states))}
    for table in spec.tables:
        for row in green.execute(table.query(True), params):
            held = states.get(row[0])
            if held is not None:
                actual(held, table, row)
    return [s for s in states.values() if s.differences(spec, domain.source.table)]


def actual(state: Aggregate, table: GreenTable, row: tuple[Any, ...]) -> None:
    """One green row (its fields, then its version) into what the aggregate holds."""
    held = state.actual.setdefault(table.name, {})
    values = row[:-1]
    held[None if table.part is None else values[table.part]] = (
        table.normalize(values) if table.normalize else tuple(values)
    )
    state.newest_lsn = max(state.newest_lsn, row[-1])
