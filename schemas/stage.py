"""The staged row: what the consumer copies into green, declared once, column by column.

A domain's transform turns a change into rows of its staging table; the apply step
copies a batch of them into that temporary table with one binary COPY and applies
them with the domain's set-based SQL. Everything about the staged row is generated
from the one declaration here (``StageTable``): the temp table's DDL, the COPY
statement and its column types, and the validation a row passes before the batch
(lengths, numeric precision, integer ranges, allowed values, aware timestamps), so
a row that green would refuse is rejected with the column named.

A staged row is either *live* or a *tombstone* (the ``deleted`` column): a
tombstone carries the key and version columns and NULL in every payload column.
Validation is pydantic on a generated tuple type, in its Rust core (about two
microseconds a row: the consumer validates every row on its hot path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal

from psycopg import sql
from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from bluegreen.core.errors import BluegreenError

_PG_TYPE = re.compile(r"^(?P<base>[a-z]+)(?:\((?P<p>\d+)(?:,\s*(?P<s>\d+))?\))?$")
# The binary COPY type of each PostgreSQL type a staged column may have.
_COPY_TYPE = {
    "varchar": "varchar",
    "text": "text",
    "jsonb": "jsonb",
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "boolean": "bool",
    "numeric": "numeric",
    "timestamptz": "timestamptz",
}
_INT_BITS = {"bigint": 64, "integer": 32, "smallint": 16}
_STRICT = ConfigDict(strict=True)
# Literal[...] built from declared values: mypy cannot check a runtime Literal.
_LITERAL: Any = Literal


class InvalidRowError(BluegreenError):
    """A transformed row does not fit green; the message names the column."""


@dataclass(frozen=True)
class StageColumn:
    """One column of the staged row.

    ``pg_type`` is written as in CREATE TABLE (``varchar(32)``, ``numeric(12, 2)``,
    ``bigint``, ``timestamptz``, ``jsonb`` carried as JSON text...); the COPY type and
    the validated Python type follow from it. ``payload`` columns are NULL in a
    tombstone; ``nullable`` ones may be NULL in a live row too. The other checks
    narrow what the type allows: ``min_length`` (strings), ``ge`` (numbers),
    ``choices`` (a string from a fixed set).
    """

    name: str
    pg_type: str
    payload: bool = False
    nullable: bool = False
    min_length: int | None = None
    ge: int | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        match = _PG_TYPE.match(self.pg_type)
        if match is None or match["base"] not in _COPY_TYPE:
            raise ValueError(f"staged column {self.name}: unsupported type {self.pg_type!r}")

    @property
    def copy_type(self) -> str:
        return _COPY_TYPE[self._parts()[0]]

    def _parts(self) -> tuple[str, int | None, int | None]:
        match = _PG_TYPE.match(self.pg_type)
        assert match is not None  # checked in __post_init__
        p, s = match["p"], match["s"]
        return match["base"], int(p) if p else None, int(s) if s else None

    def annotation(self) -> Any:
        """The pydantic type of this column's value in a live row."""
        base, precision, scale = self._parts()
        value: Any
        if self.choices:
            value = _LITERAL[self.choices]
        elif base in ("varchar", "text", "jsonb"):
            value = Annotated[
                str, StringConstraints(min_length=self.min_length, max_length=precision)
            ]
        elif base in _INT_BITS:
            bits = _INT_BITS[base]
            low = -(2 ** (bits - 1)) if self.ge is None else self.ge
            value = Annotated[int, Field(ge=low, le=2 ** (bits - 1) - 1)]
        elif base == "numeric":
            value = Annotated[
                Decimal, Field(ge=self.ge, max_digits=precision, decimal_places=scale)
            ]
        elif base == "timestamptz":
            value = AwareDatetime
        else:
            value = bool
        return value | None if self.nullable else value


@dataclass(frozen=True)
class StageTable:
    """The staging temp table of a domain: name, columns, and which column is the
    tombstone flag. ``key`` names the columns that identify a row in error messages,
    ``noun`` what a row is ("listing")."""

    name: str
    columns: tuple[StageColumn, ...]
    deleted: str
    key: tuple[str, ...]
    noun: str = "row"
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        for name in (self.deleted, *self.key):
            if name not in self.names:
                raise ValueError(f"{name!r} is not a column of staging table {self.name}")

    @property
    def payload(self) -> tuple[str, ...]:
        """The columns a tombstone leaves NULL, in declaration order."""
        return tuple(c.name for c in self.columns if c.payload)

    @property
    def copy_types(self) -> list[str]:
        return [c.copy_type for c in self.columns]

    def ddl(self) -> sql.Composed:
        """CREATE TEMP TABLE for the staged rows, emptied at every commit."""
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.pg_type),
                sql.SQL("" if c.payload or c.nullable else " NOT NULL"),
            )
            for c in self.columns
        )
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(self.name), columns
        )

    def copy(self) -> sql.Composed:
        """The binary COPY that loads a batch of staged rows."""
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(self.name), sql.SQL(", ").join(map(sql.Identifier, self.names))
        )

    @cached_property
    def _adapters(self) -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
        live: list[Any] = []
        tombstone: list[Any] = []
        for column in self.columns:
            if column.name == self.deleted:
                live.append(Literal[False])
                tombstone.append(Literal[True])
            else:
                live.append(column.annotation())
                tombstone.append(None if column.payload else column.annotation())
        # tuple[(a, b, ...)] is tuple[a, b, ...]: a type made at runtime, unknown to mypy.
        live_row: Any = tuple[tuple(live)]  # type: ignore[misc]
        tombstone_row: Any = tuple[tuple(tombstone)]  # type: ignore[misc]
        return TypeAdapter(live_row, config=_STRICT), TypeAdapter(tombstone_row, config=_STRICT)

    @cached_property
    def _deleted_at(self) -> int:
        return self.names.index(self.deleted)

    @cached_property
    def _key_at(self) -> tuple[int, ...]:
        return tuple(self.names.index(k) for k in self.key)

    def validate(self, row: tuple[Any, ...]) -> None:
        """Raise InvalidRowError, naming the columns, unless the row fits green."""
        live, tombstone = self._adapters
        try:
            (tombstone if row[self._deleted_at] is True else live).validate_python(row)
        except PydanticValidationError as exc:
            problems = []
            for error in exc.errors():
                position = error["loc"][0] if error["loc"] else None
                column = self.names[position] if isinstance(position, int) else "row"
                problems.append(f"{column}: {error['msg']}")
            key = "/".join(repr(row[i]) for i in self._key_at)
            raise InvalidRowError(
                f"{self.noun} {key} does not fit green: {'; '.join(problems)}"
            ) from exc
