"""The domain plug-in: everything the engine must know of what it migrates, in one object.

The engine (snapshot, CDC, the apply service, verification, the cutover gates) moves
and checks *some* table's changes; a ``Domain`` says which table and what green makes
of it: the source spec (blue's columns, keys and Avro contract), the pure transform,
the staged row (declared once, see ``schemas.stage``), green's DDL, the set-based
apply SQL with its version guard, the verify queries and the dead-letter supersession.
The engine receives the object and never imports a domain package; only the faces
(``bluegreen.app``) pick one, by default ``schemas.catalog:CATALOG``.

A domain is named by a reference ``"module:attribute"`` (``Settings.domain``) and
pickles as that reference: a snapshot worker process, spawned, imports the domain
again by name instead of receiving functions and compiled validators.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core.errors import ConfigError
from schemas.codec import Codec, codec_for
from schemas.envelope import Version
from schemas.source import SourceSpec
from schemas.stage import StageTable

# A dead letter's key in green, with the version its change would give it appended.
VersionedKey = tuple[Any, ...]
# A statement the engine runs as given: constant SQL, or composed with psycopg.sql.
Query = str | sql.SQL | sql.Composed


@dataclass(frozen=True)
class ApplySql:
    """The domain's statements, all run in the batch's one transaction.

    ``setup``: temp tables besides the staging table (created once per connection, ON
    COMMIT DELETE ROWS). ``apply``: run after each COPY of staged rows — the version-
    guarded upsert (only the newest operation per key, only if newer than what green
    holds; deletes as versioned tombstones) and whatever green derives from it.
    ``clear``: empties the staging and setup tables between the savepoints of a
    message-by-message retry. ``truncate``: a TRUNCATE of blue seen on one partition,
    with parameters ``partition``, ``lsn``, ``seq``: turn that partition's records older
    than it into tombstones; then ``after_truncate`` (no parameters) re-derives.
    """

    setup: tuple[Query, ...]
    apply: tuple[Query, ...]
    clear: Query
    truncate: Query
    after_truncate: tuple[Query, ...]


@dataclass(frozen=True)
class GreenTable:
    """A green table verification compares with transform(blue).

    ``fields`` are compared (the first is the aggregate key, e.g. the SKU); ``part``
    is the position of the field naming a row within its aggregate (None: one row per
    aggregate); ``version`` the column with the source LSN the row reflects;
    ``normalize`` makes a fetched row comparable (canonical JSON, say)."""

    name: str
    schema: str
    table: str
    fields: tuple[str, ...]
    part: int | None = None
    version: str = "src_lsn"
    normalize: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None

    def query(self, only: bool) -> sql.Composed:
        """The rows in aggregate order (then by part), the version last; with `only`,
        restricted to the aggregates in %(only)s."""
        key = sql.Identifier(self.fields[0])
        order = [key] if self.part is None else [key, sql.Identifier(self.fields[self.part])]
        # Keys travel as text (the verifier's queue holds any domain's keys as text); for a
        # varchar key the cast is a relabel, and the key's index still serves the lookup.
        where = (
            sql.SQL("WHERE {}::text = ANY(%(only)s::text[])").format(key) if only else sql.SQL("")
        )
        return sql.SQL("SELECT {}, {} FROM {} {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, self.fields)),
            sql.Identifier(self.version),
            sql.Identifier(self.schema, self.table),
            where,
            sql.SQL(", ").join(order),
        )


@dataclass
class Expected:
    """What green should hold for one aggregate: per green table (by name), its rows by
    part (None for a one-row table), and the blue rows the transform rejected."""

    rows: dict[str, dict[Any, tuple[Any, ...]]]
    unmappable: list[str]


@dataclass(frozen=True)
class VerifySpec:
    """How verification reads green and what it expects from blue.

    ``expected(blue_rows, version)`` gets one aggregate's blue rows (dicts by source
    column) and returns what green should hold. ``records`` is the (schema, table) of
    the versioned records, tombstones included, with the aggregate key's column and a
    ``src_lsn`` column: the newest version green holds per aggregate comes from there.
    ``repair_keys(aggregate)``: the natural keys to re-snapshot so that one aggregate is
    rebuilt from blue.
    """

    tables: tuple[GreenTable, ...]
    expected: Callable[[list[dict[str, Any]], Version], Expected]
    records: tuple[str, str]
    repair_keys: Callable[[Any], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Supersession:
    """Which dead letters green has overtaken. ``keys(event)``: the keys in green its
    change would write (None: not row by row, or no image names them);
    ``newer_in_green(conn, keys)``: those of the versioned keys (key + (lsn, seq)) that
    green holds at a strictly newer version, in one query."""

    keys: Callable[[Mapping[str, Any]], Sequence[tuple[Any, ...]] | None]
    newer_in_green: Callable[[psycopg.Connection[Any], Collection[VersionedKey]], set[VersionedKey]]


@dataclass(frozen=True)
class ReverseSpec:
    """How green's changes go back to blue once writes are on green (issue 14).

    ``tables``: green's (schema, table) pairs the reverse capture publishes; every one
    has the aggregate key column ``key_column`` (so a change names its aggregate, and a
    delete's replica identity carries it). The rest is the reverse applier's: how it
    reads the touched aggregates' green state, the inverse transform, and blue's rows.
    """

    tables: tuple[tuple[str, str], ...]
    key_column: str
    # The reverse applier's part (None/empty: this domain's writes never go back to blue).
    # green_query: the touched aggregates' green rows in one query (one snapshot), with
    # the parameter %(keys)s (text[]); aggregates(keys, rows): each asked key's state
    # (None or whatever the domain's inverse takes).
    green_query: Query = ""
    aggregates: Callable[[Sequence[str], Sequence[tuple[Any, ...]]], dict[str, Any]] | None = None
    # inverse(state, blue_rows): the rows blue should hold for one aggregate, as dicts by
    # `write_columns`, given the rows it holds (dicts by `read_columns`). Pure; raises
    # TransformError for a state blue cannot hold.
    inverse: Callable[[Any, list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    # Blue's table (schema, table), its aggregate key column, the natural key each row
    # is written on (a unique constraint), and the columns read and written (a dict or
    # list value is written as JSON).
    blue_table: tuple[str, str] = ("", "")
    blue_key: str = ""
    natural_key: tuple[str, ...] = ()
    read_columns: tuple[str, ...] = ()
    write_columns: tuple[str, ...] = ()

    @property
    def applies(self) -> bool:
        """The domain gives what the reverse applier needs."""
        return bool(
            self.green_query
            and self.aggregates
            and self.inverse
            and self.blue_key
            and self.natural_key
            and self.write_columns
        )


@dataclass(frozen=True)
class Domain:
    """One migration's domain. See the module docstring; ``ref`` must name where the
    object itself is defined (it is how the object travels to other processes)."""

    ref: str
    source: SourceSpec
    # A decoded change envelope -> the domain's operations (pure: no Kafka, no database).
    transform: Callable[[Mapping[str, Any]], Sequence[Any]]
    # One operation and its Kafka partition -> a row of `stage`.
    stage_row: Callable[[Any, int], tuple[Any, ...]]
    stage: StageTable
    # Creates green's tables (idempotent, safe to run from several services at once).
    create_green: Callable[[SecretStr], None]
    apply: ApplySql
    verify: VerifySpec
    # None: no dead letter is ever superseded (every open one blocks a cutover).
    superseded: Supersession | None = None
    # None: writes never move to green for this domain (no reverse replication).
    reverse: ReverseSpec | None = None

    def codec(self) -> Codec:
        return codec_for(self.source.avro)

    def __reduce__(self) -> tuple[Any, ...]:
        return (load_domain, (self.ref,))


def load_domain(ref: str) -> Domain:
    """The Domain object named "package.module:ATTRIBUTE"."""
    module_name, _, attribute = ref.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"domain {ref!r} not found: {exc}") from exc
    if not isinstance(found, Domain):
        raise ConfigError(f"domain {ref!r} is a {type(found).__name__}, not a Domain")
    return found
