"""Byte-identical fast encoding of change envelopes, for both producers' hot paths.

An Avro record is the concatenation of its fields' encodings, so an envelope is:
the single-object header, ``before`` and ``after`` (union index, then the row),
``key`` = null, ``op`` (enum index), ``source`` (its fields in order), ``message``
= null and ``ts_ms``. Rows are written by the compiled ``RowEncoder`` straight
from column values; the source fields that do not change within a table (and,
for a snapshot batch, everything after the row) are encoded once and reused.
Construction checks the schema still has the layout this module writes; tests
hold every result byte-identical to ``Codec.encode`` of the same event.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from bluegreen.core.errors import SerializationError
from schemas.codec import Codec, fullname
from schemas.envelope import CONNECTOR_SNAPSHOT, Op, SourceTable, Version
from schemas.rowencoder import RowEncoder, write_long
from schemas.rowvalues import Column

_LAYOUT = ("before", "after", "key", "op", "source", "message", "ts_ms")
_SOURCE_LAYOUT = (
    ("connector", "string"),
    ("db", "string"),
    ("schema", "string"),
    ("table", "string"),
    ("lsn", "long"),
    ("seq", "int"),
    ("txid", ("null", "long")),
    ("ts_ms", "long"),
    ("snapshot", "boolean"),
)


def _write_string(out: bytearray, value: str) -> None:
    data = value.encode()
    write_long(out, len(data))
    out += data


def _plain(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return tuple(_plain(t) for t in avro_type)
    wrapper = isinstance(avro_type, dict) and "logicalType" not in avro_type
    if wrapper and avro_type.get("type") not in (None, "record", "enum", "fixed", "array", "map"):
        return avro_type["type"]
    return avro_type


class EnvelopeEncoder:
    def __init__(self, codec: Codec, columns: Sequence[Column]) -> None:
        version = codec.writer
        fields = version.source["fields"]
        names = tuple(f["name"] for f in fields)
        if names != _LAYOUT:
            raise SerializationError(
                f"the fast envelope encoder writes fields {_LAYOUT}, the schema has {names}: "
                "update schemas/fastpath.py together with the schema"
            )
        row_name = fullname(version.row_source)
        for side in (fields[0], fields[1]):
            branch = side["type"][1] if len(side["type"]) == 2 else None
            if side["type"][0] != "null" or (
                branch != row_name
                and not (isinstance(branch, dict) and fullname(branch) == row_name)
            ):
                raise SerializationError(
                    f"envelope field {side['name']!r} must be ['null', {row_name}]"
                )
        if fields[2]["type"][0] != "null" or fields[5]["type"][0] != "null":
            raise SerializationError(
                "envelope fields 'key' and 'message' must be null-first unions"
            )
        source_fields = fields[4]["type"]["fields"]
        layout = tuple((f["name"], _plain(f["type"])) for f in source_fields)
        if layout != _SOURCE_LAYOUT:
            raise SerializationError(f"the source record changed: {layout}; update fastpath.py")
        self._op_index = {symbol: i for i, symbol in enumerate(fields[3]["type"]["symbols"])}
        self._row = RowEncoder(version.row_source, columns)
        self._header = version.header
        self._source_prefix: dict[tuple[str, SourceTable], bytes] = {}
        self._tail_schema = parse_schema(
            {"type": "record", "name": "SnapshotTail", "fields": fields[2:]}
        )
        self._snapshot_prefix = self._header + b"\x00\x02"  # before null, after = row
        self._snapshot_suffix = b""

    # -- any row change -------------------------------------------------------------------------

    def encode_change(
        self,
        op: Op,
        table: SourceTable,
        *,
        before: Sequence[Any] | None,
        after: Sequence[Any] | None,
        connector: str,
        version: Version,
        txid: int | None,
        ts_ms: int,
        event_ts_ms: int,
    ) -> bytes:
        out = bytearray(self._header)
        for image in (before, after):
            if image is None:
                out.append(0)
            else:
                out.append(2)
                self._row.encode_into(out, image)
        out.append(0)  # key: null
        write_long(out, self._op_index[op.value])
        out += self._source(connector, table)
        write_long(out, version.lsn)
        write_long(out, version.seq)
        if txid is None:
            out.append(0)
        else:
            out.append(2)
            write_long(out, txid)
        write_long(out, ts_ms)
        out.append(1 if connector == CONNECTOR_SNAPSHOT else 0)
        out.append(0)  # message: null
        write_long(out, event_ts_ms)
        return bytes(out)

    def _source(self, connector: str, table: SourceTable) -> bytes:
        key = (connector, table)
        prefix = self._source_prefix.get(key)
        if prefix is None:
            out = bytearray()
            for text in (connector, table.db, table.schema, table.table):
                _write_string(out, text)
            prefix = self._source_prefix[key] = bytes(out)
        return prefix

    # -- snapshot batches ---------------------------------------------------------------------

    def start_batch(self, table: SourceTable, version: Version, ts_ms: int) -> None:
        """Encode, once, everything a batch of snapshot reads shares after the row."""
        tail = {
            "key": None,
            "op": Op.READ.value,
            "source": {
                "connector": CONNECTOR_SNAPSHOT,
                "db": table.db,
                "schema": table.schema,
                "table": table.table,
                "lsn": version.lsn,
                "seq": version.seq,
                "txid": None,
                "ts_ms": ts_ms,
                "snapshot": True,
            },
            "message": None,
            "ts_ms": ts_ms,
        }
        buffer = io.BytesIO()
        schemaless_writer(buffer, self._tail_schema, tail)
        self._snapshot_suffix = buffer.getvalue()

    def encode(self, values: Sequence[Any]) -> bytes:
        """A snapshot read of one row of the current batch, from its column values."""
        out = bytearray(self._snapshot_prefix)
        self._row.encode_into(out, values)
        out += self._snapshot_suffix
        return bytes(out)
