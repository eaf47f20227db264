"""From green's decoded pgoutput messages to ``GreenChange`` events (pure: no I/O).

A green transaction becomes one event per (aggregate key, table) it touched — the
reverse applier reads each aggregate's current state from green, so *which* aggregate
changed is the whole message — in the order of each pair's first change, versioned
(commit LSN, position from 1) and stamped with the commit time. ``op`` is the pair's
last row operation in the transaction (c, u, d); it informs, the state read decides.
An update that moves a row to another aggregate touches both: the old key first.
A delete names its aggregate through the replica identity (``setup.check_identity``).

Logical messages under the ``bluegreen.`` prefix (fences, heartbeats) are op ``m``
events for every partition; a TRUNCATE of a published table is an op ``t`` event for
every partition (key '', the table named). Transactions carrying an origin that
starts with ``skip_origin`` (the forward applier's, ``schemas.control.FORWARD_ORIGIN``)
are left out; their Begin and Commit still confirm the slot past them.

A transaction's events are held until its Commit (pgoutput v1 sends a transaction
only once it committed, so this adds no latency): at most one per pair, bounded by
what the transaction touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.cdc.changes import CaptureError, TxnBegin, TxnEnd
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
from schemas.control import MESSAGE_PREFIX
from schemas.domain import ReverseSpec
from schemas.envelope import Op, Version, now_ms
from schemas.reverse import GreenChange


@dataclass(frozen=True, slots=True)
class Keyed:
    """A row change: to the partition of its aggregate key."""

    change: GreenChange


@dataclass(frozen=True, slots=True)
class Everywhere:
    """A fence, heartbeat or truncate inside a transaction: to every partition."""

    change: GreenChange


@dataclass(frozen=True, slots=True)
class Alone:
    """A non-transactional logical message: a unit of its own at `lsn`, every partition."""

    lsn: int
    change: GreenChange


ReverseAction = TxnBegin | TxnEnd | Keyed | Everywhere | Alone


@dataclass(slots=True)
class _Pending:
    key: str
    table: str
    op: Op
    prefix: str | None = None
    content: str | None = None
    broadcast: bool = False


_ROW_OPS = {Insert: Op.CREATE, Update: Op.UPDATE, Delete: Op.DELETE}


class GreenChangeBuilder:
    def __init__(self, spec: ReverseSpec, *, skip_origin: str | None = None) -> None:
        self._tables = {(schema, table) for schema, table in spec.tables}
        self._key_column = spec.key_column
        self.origins = OriginFilter(skip_origin)
        self._relations: dict[int, tuple[str, int]] = {}  # id -> (schema.table, key index)
        self._txn: Begin | None = None
        self._items: list[_Pending] = []
        self._rows: dict[tuple[str, str], _Pending] = {}

    def feed(self, message: Message) -> list[ReverseAction]:
        if isinstance(message, (Insert, Update, Delete)):  # first: the common case
            if not self.origins.skipping:
                self._row(message)
            return []
        if isinstance(message, (Begin, Commit)):
            return self._boundary(message)
        if isinstance(message, Relation):
            self._relation(message)
        elif isinstance(message, Origin):
            self.origins.saw(message)
        elif self.origins.drops(message):
            return []
        elif isinstance(message, Truncate):
            self._truncate(message)
        elif isinstance(message, LogicalMessage):
            return self._message(message)
        return []

    # -- transactions ---------------------------------------------------------------------------

    def _boundary(self, message: Begin | Commit) -> list[ReverseAction]:
        skipped = self.origins.skipping
        self.origins.saw(message)
        if isinstance(message, Begin):
            self._txn = message
            self._items, self._rows = [], {}
            return [TxnBegin(message.final_lsn, message.xid, message.commit_ts_us // 1000)]
        txn = self._open()
        ts_ms = txn.commit_ts_us // 1000
        actions: list[ReverseAction] = []
        for seq, item in enumerate(self._items, start=1):
            change = GreenChange(
                item.key,
                item.table,
                item.op,
                Version(txn.final_lsn, seq),
                ts_ms,
                prefix=item.prefix,
                content=item.content,
                xid=txn.xid,
            )
            actions.append(Everywhere(change) if item.broadcast else Keyed(change))
        actions.append(TxnEnd(message.end_lsn, message.commit_ts_us // 1000, skipped))
        self._txn, self._items, self._rows = None, [], {}
        return actions

    def _open(self) -> Begin:
        if self._txn is None:
            raise CaptureError("a green change outside a transaction")
        return self._txn

    # -- rows -----------------------------------------------------------------------------------

    def _relation(self, message: Relation) -> None:
        if (message.namespace, message.name) not in self._tables:
            return
        names = message.column_names
        if self._key_column not in names:
            raise CaptureError(
                f"green table {message.namespace}.{message.name} has no column {self._key_column}"
            )
        name = f"{message.namespace}.{message.name}"
        self._relations[message.relation_id] = (name, names.index(self._key_column))

    def _row(self, message: Insert | Update | Delete) -> None:
        self._open()
        described = self._relations.get(message.relation_id)
        if described is None:
            return  # not a published table of the spec (or no Relation yet: never sent)
        table, index = described
        op = _ROW_OPS[type(message)]
        if isinstance(message, Delete):
            self._touch(self._key(table, message.old[index], "delete"), table, op)
            return
        new = message.new[index]
        old = None if isinstance(message, Insert) or message.old is None else message.old[index]
        if new is UNCHANGED_TOAST:
            new = old
        moved = isinstance(old, str) and old != new
        if moved:  # the row moved to another aggregate: the old one changed too
            self._touch(self._key(table, old, "update"), table, op)
        self._touch(self._key(table, new, "change"), table, op)

    def _key(self, table: str, value: Value, what: str) -> str:
        if not isinstance(value, str):
            raise CaptureError(
                f"a {what} of green table {table} does not carry {self._key_column}: the table "
                f"needs a replica identity that includes it (REPLICA IDENTITY FULL or a key "
                f"with {self._key_column})"
            )
        return value

    def _touch(self, key: str, table: str, op: Op) -> None:
        pending = self._rows.get((key, table))
        if pending is None:
            pending = _Pending(key, table, op)
            self._rows[(key, table)] = pending
            self._items.append(pending)
        else:
            pending.op = op

    # -- truncates and messages -----------------------------------------------------------------

    def _truncate(self, message: Truncate) -> None:
        self._open()
        for relation_id in message.relation_ids:
            described = self._relations.get(relation_id)
            if described is not None:
                self._items.append(_Pending("", described[0], Op.TRUNCATE, broadcast=True))

    def _message(self, message: LogicalMessage) -> list[ReverseAction]:
        if not message.prefix.startswith(MESSAGE_PREFIX):
            return []
        content = message.content.decode(errors="replace")
        if message.transactional:
            self._open()
            self._items.append(
                _Pending("", "", Op.MESSAGE, message.prefix, content, broadcast=True)
            )
            return []
        change = GreenChange(
            "", "", Op.MESSAGE, Version(message.lsn, 1), now_ms(), message.prefix, content
        )
        return [Alone(message.lsn, change)]
