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
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bluegreen.core.errors import SerializationError
from schemas.envelope import Op, Version

VERSION = 1
_HEADER = bytes([0xB6, VERSION])  # 0xB6: "bluegreen reverse"; then the schema version

SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "GreenChange",
        "namespace": "bluegreen.reverse",
        "doc": "An aggregate green changed in one transaction, or a control message.",
        "fields": [
            {"name": "key", "type": "string", "doc": "aggregate key as text ('' for control)"},
            {"name": "table", "type": "string", "doc": "schema.table of green ('' for control)"},
            {"name": "op", "type": "string", "doc": "c u d t m, as schemas.envelope.Op"},
            {"name": "lsn", "type": "long", "doc": "commit LSN of the green transaction"},
            {"name": "seq", "type": "int", "doc": "position of the change in it, from 1"},
            {"name": "ts_ms", "type": "long", "doc": "green commit time, ms since epoch"},
            {"name": "prefix", "type": ["null", "string"], "default": None},
            {"name": "content", "type": ["null", "string"], "default": None},
        ],
    }
)


@dataclass(frozen=True, slots=True)
class GreenChange:
    key: str
    table: str
    op: Op
    version: Version
    ts_ms: int
    prefix: str | None = None  # op m: the logical message's prefix
    content: str | None = None  # op m: its content (a fence id, a timestamp)


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
    }
    schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


def decode(data: bytes | None) -> GreenChange:
    if data is None or data[:2] != _HEADER:
        raise SerializationError("not a reverse-stream message (bad or missing header)")
    stream = io.BytesIO(data)
    stream.seek(len(_HEADER))
    try:
        record = schemaless_reader(stream, SCHEMA, None)
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
    )
