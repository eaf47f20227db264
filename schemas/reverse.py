"""The reverse stream's contract: what green's capture tells blue's applier.

After writes move to green, green's changes flow back to blue (green -> reverse topic
-> blue) until the migration ends or writes roll back. The reverse stream carries
*which aggregates changed*, not their rows: the reverse applier reads each touched
aggregate's current state from green and writes its inverse into blue. State, not
deltas, is what makes the applier idempotent and order-tolerant within a key — the
newest read always wins, a replay writes the same rows again — and it needs no row
images of tables whose shape is the domain's business.

One event per (transaction, aggregate key, green table) for rows; one per partition
for a fence or heartbeat (a logical message green's WAL carries, control.FENCE_PREFIX
and HEARTBEAT_PREFIX). The Kafka key is the aggregate key as text, so one aggregate
stays on one partition and in commit order.

Framing: one version byte, then the Avro binary body (schemaless, parsed once).
Version 2 adds ``xid``, the green transaction's id: the applier reads green's state in
a snapshot that sees it (a transaction's commit is decoded once its WAL is flushed,
a moment before other sessions can see it). Version 1 messages still decode (xid 0).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bluegreen.core.errors import SerializationError
from schemas.envelope import Op, Version

VERSION = 2
_MAGIC = 0xB6  # "bluegreen reverse"; then the schema version
_HEADER = bytes([_MAGIC, VERSION])

_FIELDS_V1: list[dict[str, Any]] = [
    {"name": "key", "type": "string", "doc": "aggregate key as text ('' for control)"},
    {"name": "table", "type": "string", "doc": "schema.table of green ('' for control)"},
    {"name": "op", "type": "string", "doc": "c u d t m, as schemas.envelope.Op"},
    {"name": "lsn", "type": "long", "doc": "commit LSN of the green transaction"},
    {"name": "seq", "type": "int", "doc": "position of the change in it, from 1"},
    {"name": "ts_ms", "type": "long", "doc": "green commit time, ms since epoch"},
    {"name": "prefix", "type": ["null", "string"], "default": None},
    {"name": "content", "type": ["null", "string"], "default": None},
]
_XID: dict[str, Any] = {
    "name": "xid",
    "type": "long",
    "default": 0,
    "doc": "green's transaction id (32 bits, as pgoutput's Begin sends it); 0: none",
}


def _schema(fields: list[dict[str, Any]]) -> Any:
    return parse_schema(
        {
            "type": "record",
            "name": "GreenChange",
            "namespace": "bluegreen.reverse",
            "doc": "An aggregate green changed in one transaction, or a control message.",
            "fields": fields,
        }
    )


SCHEMA = _schema([*_FIELDS_V1, _XID])
_SCHEMAS = {1: _schema(_FIELDS_V1), VERSION: SCHEMA}


@dataclass(frozen=True, slots=True)
class GreenChange:
    key: str
    table: str
    op: Op
    version: Version
    ts_ms: int
    prefix: str | None = None  # op m: the logical message's prefix
    content: str | None = None  # op m: its content (a fence id, a timestamp)
    xid: int = 0  # the green transaction's id (rows); 0 when unknown


def encode(change: GreenChange) -> bytes:
    out = io.BytesIO()
    out.write(_HEADER)
    record: dict[str, Any] = {
        "key": change.key,
        "table": change.table,
        "op": str(change.op),
        "lsn": change.version.lsn,
        "seq": change.version.seq,
        "ts_ms": change.ts_ms,
        "prefix": change.prefix,
        "content": change.content,
        "xid": change.xid,
    }
    schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def decode(data: bytes | None) -> GreenChange:
    if data is None or len(data) < 2 or data[0] != _MAGIC or data[1] not in _SCHEMAS:
        raise SerializationError("not a reverse-stream message (bad or missing header)")
    stream = io.BytesIO(data)
    stream.seek(len(_HEADER))
    try:
        record = schemaless_reader(stream, _SCHEMAS[data[1]], None)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError...
        raise SerializationError(f"corrupt reverse message: {type(exc).__name__}: {exc}") from exc
    if not isinstance(record, dict) or stream.tell() != len(data):
        raise SerializationError("corrupt reverse message: trailing bytes or not a record")
    return GreenChange(
        key=record["key"],
        table=record["table"],
        op=Op(record["op"]),
        version=Version(record["lsn"], record["seq"]),
        ts_ms=record["ts_ms"],
        prefix=record["prefix"],
        content=record["content"],
        xid=record.get("xid", 0),
    )
