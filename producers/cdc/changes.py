"""From decoded pgoutput messages to change envelopes (pure: no I/O).

Every change of the source table becomes an event versioned (commit LSN of its
transaction, position in the transaction from 1). Updates carry the full old row
(blue has REPLICA IDENTITY FULL); a TOASTed column an update did not touch comes
as "unchanged" and is taken from the old row, never left empty. A change of the
primary key becomes a delete of the old row and a create of the new one; so does a
change of the aggregate key (the SKU), each keyed by its own aggregate. Logical
messages under the ``bluegreen.`` prefix (fences, heartbeats) and truncates of the
source table are broadcast to every partition; changes of other tables are
ignored. Transactions the reverse applier wrote into blue (their replication origin
starts with ``schemas.control.REVERSE_ORIGIN``) are green's own changes coming back:
they are skipped (``origins.OriginFilter``), their Begin and Commit still confirm
the slot past them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bluegreen.core.errors import BluegreenError
from producers.cdc.origins import OriginFilter
from producers.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    Truncate,
    Update,
    Value,
)
from schemas.control import MESSAGE_PREFIX, REVERSE_ORIGIN
from schemas.envelope import CONNECTOR_CDC, Op, Version, message_event, now_ms, row_event
from schemas.source import SourceSpec


class CaptureError(BluegreenError):
    """A change cannot be captured completely; nothing past it is acknowledged."""


@dataclass(frozen=True, slots=True)
class TxnBegin:
    commit_lsn: int
    xid: int
    commit_ts_ms: int


@dataclass(frozen=True, slots=True)
class TxnEnd:
    end_lsn: int
    commit_ts_ms: int
    skipped: bool = False  # the transaction's changes were left out (its origin)


@dataclass(frozen=True, slots=True)
class KeyedChange:
    """A row change, routed to the partition of its aggregate key; rows are Avro-ready
    column values in the source spec's order (see SourceSpec.text_converter)."""

    key: bytes
    op: Op
    before: tuple[Any, ...] | None
    after: tuple[Any, ...] | None
    version: Version
    txid: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A fence, heartbeat or truncate: sent to every partition."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Standalone:
    """A non-transactional logical message: a unit of its own at `lsn`."""

    lsn: int
    event: dict[str, Any]


Action = TxnBegin | TxnEnd | KeyedChange | Broadcast | Standalone


class ChangeBuilder:
    def __init__(
        self, source: SourceSpec, database: str, *, skip_origin: str | None = REVERSE_ORIGIN
    ) -> None:
        self.source = source
        self.origins = OriginFilter(skip_origin)
        self.table = source.source_table(database)
        self._relations: dict[int, Relation] = {}
        self._txn: Begin | None = None
        self._seq = 0
        self._pk_index = source.names.index(source.primary_key)
        self._key_index = source.names.index(source.aggregate_key)
        self.ignored = 0

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def feed(self, message: Message) -> list[Action]:
        if isinstance(message, (Insert, Update, Delete)):  # first: the common case
            return [] if self.origins.skipping else self._row_change(message)
        if isinstance(message, (Begin, Commit)):
            return [self._boundary(message)]
        if isinstance(message, Relation):
            self._relations[message.relation_id] = message
        elif isinstance(message, Origin):
            self.origins.saw(message)
        elif self.origins.drops(message):
            return []
        elif isinstance(message, Truncate):
            return self._truncate(message)
        elif isinstance(message, LogicalMessage):
            return self._logical_message(message)
        return []  # Relation, Origin, Type: nothing to send

    def _boundary(self, message: Begin | Commit) -> TxnBegin | TxnEnd:
        skipped = self.origins.skipping
        self.origins.saw(message)
        if isinstance(message, Begin):
            self._txn, self._seq = message, 0
            return TxnBegin(message.final_lsn, message.xid, message.commit_ts_us // 1000)
        self._txn = None
        return TxnEnd(message.end_lsn, message.commit_ts_us // 1000, skipped)

    # -- rows -----------------------------------------------------------------------------------

    def _relation(self, relation_id: int) -> Relation | None:
        relation = self._relations.get(relation_id)
        if relation is None:
            raise CaptureError(f"change of relation {relation_id} before its Relation message")
        if (relation.namespace, relation.name) != (self.source.schema, self.source.table):
            self.ignored += 1
            return None
        return relation

    def _version(self) -> tuple[Version, Begin]:
        if self._txn is None:
            raise CaptureError("a row change outside a transaction")
        self._seq += 1
        return Version(self._txn.final_lsn, self._seq), self._txn

    def _change(
        self,
        op: Op,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        version: Version | None = None,
    ) -> KeyedChange:
        own_version, txn = self._version() if version is None else (version, self._open())
        image = after if after is not None else before
        assert image is not None
        return KeyedChange(
            key=str(image[self._key_index]).encode(),
            op=op,
            before=before,
            after=after,
            version=own_version,
            txid=txn.xid,
            ts_ms=txn.commit_ts_us // 1000,
        )

    def _open(self) -> Begin:
        if self._txn is None:
            raise CaptureError("a row change outside a transaction")
        return self._txn

    def event_of(self, change: KeyedChange) -> dict[str, Any]:
        """The change as an envelope dict (what Codec.encode takes)."""
        as_record = self.source.avro_row
        return row_event(
            change.op,
            self.table,
            before=None if change.before is None else as_record(change.before),
            after=None if change.after is None else as_record(change.after),
            version=change.version,
            txid=change.txid,
            ts_ms=change.ts_ms,
            connector=CONNECTOR_CDC,
        )

    def _row_change(self, message: Insert | Update | Delete) -> list[Action]:
        relation = self._relation(message.relation_id)
        if relation is None:
            return []
        names = relation.column_names
        if isinstance(message, Insert):
            return [self._change(Op.CREATE, None, self._row(names, message.new))]
        if isinstance(message, Delete):
            before = self._full_old(relation, message.old, message.old_is_key, "delete")
            return [self._change(Op.DELETE, self._row(names, before), None)]
        old = (
            None
            if message.old is None
            else self._full_old(relation, message.old, message.old_is_key, "update")
        )
        new = self._fill_unchanged(relation, message.new, old)
        before_row = None if old is None else self._row(names, old)
        after = self._row(names, new)
        pk, key = self._pk_index, self._key_index
        if before_row is not None and before_row[pk] != after[pk]:
            # A new primary key is a new row: the old one is deleted, the new one created.
            return [self._change(Op.DELETE, before_row, None), self._change(Op.CREATE, None, after)]
        if before_row is not None and before_row[key] != after[key]:
            # The row moved to another aggregate (its SKU changed). Per-key order holds only
            # if every operation on a green key travels on that key's partition: the delete
            # goes keyed by the old aggregate, the row's new state keyed by the new one, both
            # at this change's version. (One event keyed by the new SKU would have the old
            # SKU's listing deleted by whichever consumer owns the new SKU's partition,
            # racing the old SKU's own partition.)
            moved_at, _txn = self._version()
            return [
                self._change(Op.DELETE, before_row, None, moved_at),
                self._change(Op.CREATE, None, after, moved_at),
            ]
        return [self._change(Op.UPDATE, before_row, after)]

    def _full_old(
        self, relation: Relation, old: tuple[Value, ...], is_key: bool, what: str
    ) -> tuple[Value, ...]:
        if is_key or relation.replica_identity != "f":
            raise CaptureError(
                f"a {what} of {self.source.qualified} carries only its key: the table needs "
                f"REPLICA IDENTITY FULL (bluegreen sets it; was it changed back?)"
            )
        return old

    def _fill_unchanged(
        self, relation: Relation, new: tuple[Value, ...], old: tuple[Value, ...] | None
    ) -> tuple[Value, ...]:
        if not any(v is UNCHANGED_TOAST for v in new):
            return new
        if old is None:
            missing = [
                c.name for c, v in zip(relation.columns, new, strict=True) if v is UNCHANGED_TOAST
            ]
            raise CaptureError(
                f"an update of {self.source.qualified} left TOASTed columns {missing} out and "
                "no old row carries them: the table needs REPLICA IDENTITY FULL"
            )
        return tuple(o if n is UNCHANGED_TOAST else n for n, o in zip(new, old, strict=True))

    def _row(self, names: tuple[str, ...], values: Sequence[Value]) -> tuple[Any, ...]:
        for name, value in zip(names, values, strict=True):
            if value is UNCHANGED_TOAST or isinstance(value, bytes):
                raise CaptureError(f"column {name}: expected a text value from pgoutput")
        return self.source.text_converter(names)(values)  # type: ignore[arg-type]

    # -- truncates and messages -----------------------------------------------------------------

    def _truncate(self, message: Truncate) -> list[Action]:
        ours = [
            rid
            for rid in message.relation_ids
            if (rel := self._relations.get(rid)) is not None
            and (rel.namespace, rel.name) == (self.source.schema, self.source.table)
        ]
        if not ours:
            return []
        version, txn = self._version()
        event = row_event(
            Op.TRUNCATE,
            self.table,
            before=None,
            after=None,
            version=version,
            txid=txn.xid,
            ts_ms=txn.commit_ts_us // 1000,
            connector=CONNECTOR_CDC,
        )
        return [Broadcast(event)]

    def _logical_message(self, message: LogicalMessage) -> list[Action]:
        if not message.prefix.startswith(MESSAGE_PREFIX):
            return []
        content = message.content.decode(errors="replace")
        if message.transactional:
            version, txn = self._version()
            event = message_event(
                self.table,
                prefix=message.prefix,
                content=content,
                version=version,
                txid=txn.xid,
                ts_ms=txn.commit_ts_us // 1000,
            )
            return [Broadcast(event)]
        event = message_event(
            self.table,
            prefix=message.prefix,
            content=content,
            version=Version(message.lsn, 1),
            txid=None,
            ts_ms=now_ms(),
        )
        return [Standalone(message.lsn, event)]
