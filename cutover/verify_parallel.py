"""A full pass's blue side on two cores: the upper half of the aggregate keys is read,
transformed and digested by a second process, at the same snapshot.

The round's snapshot transaction exports its snapshot (``pg_export_snapshot``); the
helper process opens its own connection to blue, imports it (``SET TRANSACTION
SNAPSHOT``) and so reads exactly what the round reads. It returns, per aggregate,
blue's row count, the digest of transform(blue) per green table and whether a row was
rejected (``Digested``), never the rows: in a range that differs, the round reads
those aggregates' blue rows again at its own snapshot and compares them row by row.
Below ``SPLIT_MIN_ROWS`` blue rows the pass stays in one process.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.errors import BluegreenError
from cutover.canonical import digest
from producers.snapshot.reader import BlueSnapshot
from schemas.domain import Domain, Expected
from schemas.envelope import Version

SPLIT_MIN_ROWS = 50_000  # below this, a second process costs more than it saves
_CHUNK = 2_000
_BLUE_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c statement_timeout=0"


class Digested(NamedTuple):
    """One aggregate of blue as the helper process returns it."""

    key: Any
    blue_rows: int
    digests: tuple[str | None, ...]  # per green table, in the spec's order
    unmappable: bool


def blue_select(domain: Domain, where: sql.Composable) -> sql.Composed:
    """Blue's rows as a decoded envelope carries them, in aggregate then natural-key order."""
    source = domain.source
    order = (source.aggregate_key, *(k for k in source.natural_key if k != source.aggregate_key))
    return sql.SQL("SELECT {} FROM {} {} ORDER BY {}").format(
        source.plain_select(),
        source.table_sql,
        where,
        sql.SQL(", ").join(map(sql.Identifier, order)),
    )


def grouped(
    rows: Iterator[tuple[Any, ...]], domain: Domain
) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """Blue's rows (in aggregate order) grouped per aggregate, as dicts by column."""
    names = domain.source.names
    index = names.index(domain.source.aggregate_key)
    current: Any = None
    group: list[dict[str, Any]] = []
    for values in rows:
        if values[index] != current or not group:
            if group:
                yield current, group
            current, group = values[index], []
        group.append(dict(zip(names, values, strict=True)))
    if group:
        yield current, group


def split_key(snapshot: BlueSnapshot, domain: Domain) -> Any | None:
    """The aggregate key at the middle of blue's rows; None when blue is too small."""
    key, table = sql.Identifier(domain.source.aggregate_key), domain.source.table_sql
    count = next(iter(snapshot.stream(sql.SQL("SELECT count(*) FROM {}").format(table))))[0]
    if count < SPLIT_MIN_ROWS:
        return None
    query = sql.SQL("SELECT {} FROM {} ORDER BY {} OFFSET {} LIMIT 1").format(
        key, table, key, sql.Literal(int(count) // 2)
    )
    found = list(snapshot.stream(query))
    return found[0][0] if found else None


def _range(domain: Domain, lower: bool, at: Any) -> sql.Composed:
    key = sql.Identifier(domain.source.aggregate_key)
    compare = sql.SQL("<") if lower else sql.SQL(">=")
    return sql.SQL("WHERE {} {} {}").format(key, compare, sql.Literal(at))


def _digest(domain: Domain, key: Any, rows: list[dict[str, Any]], version: Version) -> Digested:
    expected = domain.verify.expected(rows, version)
    digests = tuple(digest(expected.rows.get(t.name, {})) for t in domain.verify.tables)
    extra = set(expected.rows) - {t.name for t in domain.verify.tables}
    return Digested(key, len(rows), digests, bool(expected.unmappable or extra))


class _Job(NamedTuple):
    dsn: SecretStr
    domain: Domain
    snapshot_id: str
    version: Version
    at: Any  # the helper's aggregates are those from this key on


def _helper(job: _Job, out: Any) -> None:
    """The helper process: blue's aggregates from `job.at` on, digested, in chunks on
    `out`, then None. A failure ends the process with its traceback on stderr; the
    round sees it exit."""
    domain = job.domain
    with db.connect(job.dsn, autocommit=True, options=_BLUE_OPTIONS) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(job.snapshot_id)))
        with conn.cursor(name="verify_blue_upper") as cursor:
            cursor.itersize = 5_000
            cursor.execute(blue_select(domain, _range(domain, False, job.at)))
            chunk: list[Digested] = []
            for key, rows in grouped(iter(cursor), domain):
                chunk.append(_digest(domain, key, rows, job.version))
                if len(chunk) >= _CHUNK:
                    out.put(chunk)
                    chunk = []
            out.put(chunk)
    out.put(None)


class _Helper(NamedTuple):
    process: Any  # multiprocessing's SpawnProcess
    out: Any  # its queue
    timeout_s: float


def blue_sides(
    dsn: SecretStr, domain: Domain, snapshot: BlueSnapshot, timeout_s: float
) -> Iterator[tuple[Any, list[dict[str, Any]]] | Digested] | None:
    """Blue's aggregates in key order, the upper half digested by a helper process;
    None when blue is too small to split (the caller reads it in one process)."""
    at = split_key(snapshot, domain)
    if at is None:
        return None
    exported = next(iter(snapshot.stream(sql.SQL("SELECT pg_export_snapshot()"))))[0]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(
        target=_helper,
        args=(_Job(dsn, domain, exported, snapshot.version, at), out),
        name="bluegreen-verify-blue",
        daemon=True,
    )
    process.start()
    return _sides(domain, snapshot, at, _Helper(process, out, timeout_s))


def _sides(
    domain: Domain, snapshot: BlueSnapshot, at: Any, helper: _Helper
) -> Iterator[tuple[Any, list[dict[str, Any]]] | Digested]:
    try:
        yield from grouped(snapshot.stream(blue_select(domain, _range(domain, True, at))), domain)
        while (chunk := _next_chunk(helper)) is not None:
            yield from chunk
    finally:
        helper.process.join(5)
        if helper.process.is_alive():
            helper.process.kill()
            helper.process.join()


def _next_chunk(helper: _Helper) -> list[Digested] | None:
    deadline = time.monotonic() + helper.timeout_s
    while True:
        try:
            chunk: list[Digested] | None = helper.out.get(timeout=1.0)
        except queue.Empty:
            if not helper.process.is_alive() and helper.out.empty():
                raise BluegreenError(
                    f"verification's blue helper exited with {helper.process.exitcode} "
                    "before it finished (its traceback is on stderr)"
                ) from None
            if time.monotonic() > deadline:
                raise BluegreenError(
                    f"verification's blue helper silent for {helper.timeout_s:.0f}s"
                ) from None
            continue
        return chunk


def expected_again(
    snapshot: BlueSnapshot, domain: Domain, keys: Collection[Any]
) -> dict[Any, Expected]:
    """transform(blue) of these aggregates, read again at the round's snapshot."""
    key = sql.Identifier(domain.source.aggregate_key)
    where = sql.SQL("WHERE {}::text = ANY({}::text[])").format(
        key, sql.Literal(sorted(map(str, keys)))
    )
    rows = snapshot.stream(blue_select(domain, where))
    return {
        k: domain.verify.expected(group, snapshot.version) for k, group in grouped(rows, domain)
    }
