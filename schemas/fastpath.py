"""Byte-identical fast encoding of snapshot envelopes.

An Avro record is the concatenation of its fields' encodings, so a snapshot
read's envelope is: header, ``before`` = null, the union index of ``after``'s
row branch, the row, then fields that are the same for a whole batch (key,
op, source, message, ts_ms). Those are encoded once per batch; per message only
the row is encoded, by the compiled ``RowEncoder``, straight from the values a
binary COPY returned. Tests hold the result to be byte-identical to
``Codec.encode`` of the same event.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from bluegreen.errors import SerializationError
from schemas.codec import Codec, fullname
from schemas.envelope import CONNECTOR_SNAPSHOT, Op, SourceTable, Version
from schemas.rowencoder import RowEncoder
from schemas.rowvalues import Column

_LAYOUT = ("before", "after", "key", "op", "source", "message", "ts_ms")


class SnapshotEncoder:
    def __init__(self, codec: Codec, columns: Sequence[Column]) -> None:
        fields = codec.writer.source["fields"]
        names = tuple(f["name"] for f in fields)
        if names != _LAYOUT:
            raise SerializationError(
                f"the fast snapshot encoder expects envelope fields {_LAYOUT}, the schema has "
                f"{names}: update schemas/fastpath.py with the schema"
            )
        row = codec.writer.row_source
        row_name = fullname(row)
        after = fields[1]["type"]
        branch = after[1] if len(after) == 2 and after[0] == "null" else None
        if branch != row_name and not (isinstance(branch, dict) and fullname(branch) == row_name):
            raise SerializationError(f"envelope field 'after' must be ['null', {row_name}]")
        self._row = RowEncoder(row, columns)
        # before = null (union index 0), after = row (union index 1): zig-zag varints 0 and 2.
        self._prefix = codec.writer.header + b"\x00\x02"
        self._tail_schema = parse_schema(
            {"type": "record", "name": "SnapshotTail", "fields": fields[2:]}
        )
        self._suffix = b""

    def start_batch(self, table: SourceTable, version: Version, ts_ms: int) -> None:
        """Encode the fields shared by the batch's events once."""
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
        self._suffix = buffer.getvalue()

    def encode(self, values: Sequence[Any]) -> bytes:
        """The envelope of one row, from its column values (see SourceSpec.select_list)."""
        out = bytearray(self._prefix)
        self._row.encode_into(out, values)
        out += self._suffix
        return bytes(out)
