"""Column kinds of a source table and their conversion to Avro-ready values.

Both producers hold a row as "Avro-ready" column values: timestamps as
microseconds since the epoch (timestamp-micros), decimals as their unscaled
integer (Avro's decimal bytes are that integer's two's complement, see
``unscaled_bytes``). The snapshot gets them straight from PostgreSQL (SQL
expressions in a binary COPY); CDC parses pgoutput's text. The same row
therefore encodes to the same bytes whichever producer read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from psycopg import sql

from bluegreen.core.errors import SerializationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Kind(Enum):
    LONG = "long"
    INT = "int"
    STRING = "string"
    JSON = "json"  # jsonb, carried as its JSON text
    BOOLEAN = "boolean"
    DECIMAL2 = "decimal2"  # numeric(12, 2)
    TIMESTAMP = "timestamp"  # timestamptz, as timestamp-micros


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False


def unscaled_bytes(unscaled: int) -> bytes:
    """Avro decimal bytes: two's-complement big-endian, sized as fastavro sizes them."""
    length = (unscaled.bit_length() + 8) // 8
    return unscaled.to_bytes(length, "big", signed=True)


def timestamp_micros(value: datetime) -> int:
    return (value - EPOCH) // _MICROSECOND


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EPOCH


def snapshot_select(column: Column) -> sql.Composable:
    """SQL expression giving the column's Avro-ready value in a binary COPY."""
    name = sql.Identifier(column.name)
    if column.kind is Kind.DECIMAL2:
        return sql.SQL("({} * 100)::bigint").format(name)
    if column.kind is Kind.TIMESTAMP:
        return sql.SQL("(extract(epoch from {}) * 1000000)::bigint").format(name)
    return plain_select(column)


def plain_select(column: Column) -> sql.Composable:
    """SQL expression giving the column's value as a decoded envelope carries it."""
    name = sql.Identifier(column.name)
    return sql.SQL("{}::text").format(name) if column.kind is Kind.JSON else name


# The Avro type of each kind in a row record (what the .avsc of the row declares).
AVRO_TYPE: dict[Kind, Any] = {
    Kind.LONG: "long",
    Kind.INT: "int",
    Kind.STRING: "string",
    Kind.JSON: "string",
    Kind.BOOLEAN: "boolean",
    Kind.DECIMAL2: {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
    Kind.TIMESTAMP: {"type": "long", "logicalType": "timestamp-micros"},
}

# The binary COPY type of each kind's own column value (what a loader writes into blue).
NATIVE_COPY_TYPE = {
    Kind.LONG: "int8",
    Kind.INT: "int4",
    Kind.STRING: "text",
    Kind.JSON: "jsonb",
    Kind.BOOLEAN: "bool",
    Kind.DECIMAL2: "numeric",
    Kind.TIMESTAMP: "timestamptz",
}

# The binary COPY type of each kind's Avro-ready value (snapshot_select).
COPY_TYPE = {
    Kind.LONG: "int8",
    Kind.INT: "int4",
    Kind.STRING: "text",
    Kind.JSON: "text",
    Kind.BOOLEAN: "bool",
    Kind.DECIMAL2: "int8",
    Kind.TIMESTAMP: "int8",
}


def _decimal2_from_text(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise SerializationError(f"numeric value {text!r} is not a number") from exc
    unscaled = value.scaleb(2)
    if unscaled != unscaled.to_integral_value():
        raise SerializationError(f"numeric value {text!r} has more than 2 decimal places")
    return int(unscaled)


def _timestamp_from_text(text: str) -> int:
    try:
        return timestamp_micros(datetime.fromisoformat(text))
    except ValueError as exc:
        raise SerializationError(
            f"timestamp {text!r} cannot be carried as timestamp-micros"
        ) from exc


def _bool_from_text(text: str) -> bool:
    if text not in ("t", "f"):
        raise SerializationError(f"boolean value {text!r} is neither t nor f")
    return text == "t"


FROM_TEXT: dict[Kind, Callable[[str], Any]] = {
    Kind.LONG: int,
    Kind.INT: int,
    Kind.STRING: str,
    Kind.JSON: str,
    Kind.BOOLEAN: _bool_from_text,
    Kind.DECIMAL2: _decimal2_from_text,
    Kind.TIMESTAMP: _timestamp_from_text,
}
