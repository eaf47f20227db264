"""What the engine needs to know of a source table: columns, keys, Avro-ready rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from bluegreen.core.errors import SerializationError
from schemas.envelope import SourceTable
from schemas.rowvalues import (
    AVRO_TYPE,
    COPY_TYPE,
    FROM_TEXT,
    NATIVE_COPY_TYPE,
    Column,
    Kind,
    plain_select,
    snapshot_select,
    unscaled_bytes,
)


@dataclass(frozen=True)
class SourceSpec:
    schema: str
    table: str
    primary_key: str  # a bigint column: snapshot tasks are ranges of it
    columns: tuple[Column, ...]
    aggregate_key: str  # the Kafka key: all changes of one green aggregate, one partition
    natural_key: tuple[str, ...]  # identifies a row for a repair's "absent" delete
    # The folder of the kept Avro versions (v1/, v2/...) of this table's change
    # envelope; None: the package's own (schemas/avro). Producers and the consumer build
    # their codec from it, so a spec that travels to a worker process brings its contract.
    avro: Path | None = None
    names: tuple[str, ...] = field(init=False)
    _decimal_positions: tuple[int, ...] = field(init=False)
    _converters: dict[tuple[str, ...], Callable[[Sequence[str | None]], tuple[Any, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        object.__setattr__(self, "_converters", {})
        object.__setattr__(
            self,
            "_decimal_positions",
            tuple(i for i, c in enumerate(self.columns) if c.kind is Kind.DECIMAL2),
        )
        for key in (self.primary_key, self.aggregate_key, *self.natural_key):
            if key not in self.names:
                raise ValueError(f"key column {key!r} is not a column of {self.qualified}")

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.table}"'

    def source_table(self, database: str) -> SourceTable:
        return SourceTable(database, self.schema, self.table)

    @property
    def table_sql(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    def select_list(self) -> sql.Composed:
        """The columns as Avro-ready values (what the snapshot's binary COPY reads)."""
        return sql.SQL(", ").join(snapshot_select(c) for c in self.columns)

    def plain_select(self) -> sql.Composed:
        """The columns as the values a decoded envelope carries (jsonb as its text)."""
        return sql.SQL(", ").join(plain_select(c) for c in self.columns)

    def avro_fields(self) -> list[dict[str, Any]]:
        """The Avro record fields this declaration implies: name and type, in order.
        A published .avsc cannot be regenerated without changing its bytes, so tests
        compare it with this instead."""
        fields: list[dict[str, Any]] = []
        for c in self.columns:
            avro_type = AVRO_TYPE[c.kind]
            fields.append(
                {"name": c.name, "type": ["null", avro_type] if c.nullable else avro_type}
            )
        return fields

    def copy_types(self) -> list[str]:
        """COPY types of select_list()'s Avro-ready values."""
        return [COPY_TYPE[c.kind] for c in self.columns]

    def native_copy_types(self) -> list[str]:
        """COPY types of the columns' own values (a loader's binary COPY into blue)."""
        return [NATIVE_COPY_TYPE[c.kind] for c in self.columns]

    def avro_row(self, values: Sequence[Any]) -> dict[str, Any]:
        """Avro-ready column values (see schemas.rowvalues) as a record fastavro writes."""
        row = dict(zip(self.names, values, strict=True))
        for position in self._decimal_positions:
            value = values[position]
            if value is not None:
                row[self.names[position]] = unscaled_bytes(value)
        return row

    def row_from_text(self, names: Sequence[str], values: Sequence[str | None]) -> dict[str, Any]:
        """A row from pgoutput's text values as an Avro record (dict)."""
        return self.avro_row(self.text_converter(tuple(names))(values))

    def text_converter(
        self, names: tuple[str, ...]
    ) -> Callable[[Sequence[str | None]], tuple[Any, ...]]:
        """A function from a replication tuple (columns in `names` order) to Avro-ready
        values in this spec's column order; built once per relation layout."""
        cached = self._converters.get(names)
        if cached is not None:
            return cached
        position = {name: i for i, name in enumerate(names)}
        missing = [c.name for c in self.columns if c.name not in position]
        if missing:
            raise SerializationError(
                f"{self.qualified} changed: columns {missing} are missing from the "
                "replication stream; update the source spec and the Avro schema"
            )
        convert = TextConverter(
            self.qualified, [(position[c.name], c.kind, c.nullable, c.name) for c in self.columns]
        )
        self._converters[names] = convert
        return convert


class TextConverter:
    """Replication text values (in a relation's column order) to Avro-ready values in the
    spec's column order. A class, not a closure, so a spec that cached one still pickles
    into worker processes."""

    def __init__(self, qualified: str, plan: list[tuple[int, Kind, bool, str]]) -> None:
        self._qualified = qualified
        self._plan = [
            (index, FROM_TEXT[kind], nullable, name) for index, kind, nullable, name in plan
        ]
        self._source_plan = plan

    def __reduce__(self) -> tuple[Any, ...]:
        return (TextConverter, (self._qualified, self._source_plan))

    def __call__(self, values: Sequence[str | None]) -> tuple[Any, ...]:
        out: list[Any] = []
        for index, parse, nullable, name in self._plan:
            text = values[index]
            if text is None:
                if not nullable:
                    raise SerializationError(f"{self._qualified}.{name} is NULL")
                out.append(None)
            else:
                out.append(parse(text))
        return tuple(out)
