"""The change envelope shared by both producers, and the version it carries.

Events travel as plain dicts (what fastavro reads and writes fastest); these
helpers build them so that every producer fills every field the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

CONNECTOR_SNAPSHOT = "snapshot"
CONNECTOR_CDC = "cdc"


class Op(StrEnum):
    READ = "r"
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    TRUNCATE = "t"
    MESSAGE = "m"


class Version(NamedTuple):
    """Source position a green row reflects; compared as a tuple.

    CDC: (commit LSN of the transaction, position of the change in it, from 1).
    Snapshot: (the snapshot's consistent point, 0), older than every change
    committed after that point and newer than every change before it.
    """

    lsn: int
    seq: int


@dataclass(frozen=True, slots=True)
class SourceTable:
    db: str
    schema: str
    table: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def row_event(
    op: Op,
    table: SourceTable,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    version: Version,
    txid: int | None,
    ts_ms: int,
    connector: str,
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "key": None,
        "op": op.value,
        "source": {
            "connector": connector,
            "db": table.db,
            "schema": table.schema,
            "table": table.table,
            "lsn": version.lsn,
            "seq": version.seq,
            "txid": txid,
            "ts_ms": ts_ms,
            "snapshot": connector == CONNECTOR_SNAPSHOT,
        },
        "message": None,
        "ts_ms": now_ms(),
    }


def message_event(
    table: SourceTable, *, prefix: str, content: str, version: Version, txid: int | None, ts_ms: int
) -> dict[str, Any]:
    """A logical message from blue's WAL (fence, heartbeat), op m."""
    event = row_event(
        Op.MESSAGE,
        table,
        before=None,
        after=None,
        version=version,
        txid=txid,
        ts_ms=ts_ms,
        connector=CONNECTOR_CDC,
    )
    event["message"] = {"prefix": prefix, "content": content}
    return event


def absent_event(
    table: SourceTable, key: dict[str, Any], *, version: Version, ts_ms: int
) -> dict[str, Any]:
    """A snapshot's finding that a requested key has no row in blue: a delete without image."""
    event = row_event(
        Op.DELETE,
        table,
        before=None,
        after=None,
        version=version,
        txid=None,
        ts_ms=ts_ms,
        connector=CONNECTOR_SNAPSHOT,
    )
    event["key"] = key
    return event


def version_of(event: dict[str, Any]) -> Version:
    source = event["source"]
    return Version(source["lsn"], source["seq"])
