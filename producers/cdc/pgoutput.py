"""Decoder of PostgreSQL's pgoutput logical replication messages, protocol version 1.

Pure: bytes in, typed messages out (PostgreSQL docs, "Logical Replication Message
Formats"). Messages: Begin, Commit, Origin, Relation, Type, Insert, Update,
Delete, Truncate, Message; tuple columns: null, unchanged TOAST, text, binary.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bluegreen.core.errors import BluegreenError

# pgoutput timestamps count microseconds from 2000-01-01 UTC.
PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


class DecodeError(BluegreenError):
    """A replication message could not be decoded."""


class _Unchanged:
    """A TOASTed column the update did not touch: its value is not in the message."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _Unchanged()
Value = str | bytes | None | _Unchanged


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: the transaction's commit LSN
    commit_ts_us: int  # microseconds since the Unix epoch
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[RelationColumn, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_id: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relation_id: int
    old: tuple[Value, ...] | None  # the full old row (identity FULL) or its key
    old_is_key: bool
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_id: int
    old: tuple[Value, ...]
    old_is_key: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)

_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # after the message type byte

    def _take(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.data, self.pos)
        except struct.error as exc:
            raise DecodeError(f"message ends early at byte {self.pos}") from exc
        self.pos += fmt.size
        return int(value)

    def i8(self) -> int:
        return self._take(_I8)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def u32(self) -> int:
        return self._take(_U32)

    def i64(self) -> int:
        return self._take(_I64)

    def u64(self) -> int:
        return self._take(_U64)

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise DecodeError(f"message ends early at byte {self.pos}")
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise DecodeError(f"unterminated string at byte {self.pos}")
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise DecodeError(f"a {size}-byte field overruns the message at byte {self.pos}")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def tuple_data(self) -> tuple[Value, ...]:
        """TupleData, parsed in one tight loop: it is the CDC producer's hot path."""
        data, pos = self.data, self.pos
        try:
            (count,) = _I16.unpack_from(data, pos)
            pos += 2
            values: list[Value] = []
            append = values.append
            for _ in range(count):
                kind = data[pos]
                pos += 1
                if kind == 0x74:  # 't': text
                    (size,) = _I32.unpack_from(data, pos)
                    pos += 4
                    end = pos + size
                    if end > len(data):
                        raise DecodeError(f"a {size}-byte value overruns the message at {pos}")
                    append(data[pos:end].decode())
                    pos = end
                elif kind == 0x6E:  # 'n': null
                    append(None)
                elif kind == 0x75:  # 'u': unchanged TOASTed value
                    append(UNCHANGED_TOAST)
                elif kind == 0x62:  # 'b': binary
                    (size,) = _I32.unpack_from(data, pos)
                    pos += 4
                    append(data[pos : pos + size])
                    pos += size
                else:
                    raise DecodeError(f"unknown tuple column kind {chr(kind)!r} at byte {pos - 1}")
        except (struct.error, IndexError) as exc:
            raise DecodeError(f"tuple data ends early at byte {pos}") from exc
        self.pos = pos
        return tuple(values)


def _timestamp(pg_us: int) -> int:
    return pg_us + PG_EPOCH_US


def _begin(r: _Reader) -> Begin:
    return Begin(final_lsn=r.u64(), commit_ts_us=_timestamp(r.i64()), xid=r.u32())


def _commit(r: _Reader) -> Commit:
    return Commit(
        flags=r.i8(), commit_lsn=r.u64(), end_lsn=r.u64(), commit_ts_us=_timestamp(r.i64())
    )


def _origin(r: _Reader) -> Origin:
    return Origin(lsn=r.u64(), name=r.string())


def _relation(r: _Reader) -> Relation:
    relation_id, namespace, name = r.u32(), r.string(), r.string()
    identity, count = r.byte(), r.i16()
    columns = []
    for _ in range(count):
        flags = r.i8()
        columns.append(
            RelationColumn(
                name=r.string(), type_oid=r.u32(), type_modifier=r.i32(), is_key=bool(flags & 1)
            )
        )
    return Relation(relation_id, namespace or "pg_catalog", name, identity, tuple(columns))


def _type(r: _Reader) -> TypeInfo:
    return TypeInfo(type_oid=r.u32(), namespace=r.string(), name=r.string())


def _insert(r: _Reader) -> Insert:
    relation_id = r.u32()
    if r.byte() != "N":
        raise DecodeError("insert without a new tuple")
    return Insert(relation_id, r.tuple_data())


def _update(r: _Reader) -> Update:
    relation_id = r.u32()
    marker = r.byte()
    old: tuple[Value, ...] | None = None
    old_is_key = False
    if marker in ("K", "O"):
        old = r.tuple_data()
        old_is_key = marker == "K"
        marker = r.byte()
    if marker != "N":
        raise DecodeError(f"update without a new tuple (found {marker!r})")
    return Update(relation_id, old, old_is_key, r.tuple_data())


def _delete(r: _Reader) -> Delete:
    relation_id = r.u32()
    marker = r.byte()
    if marker not in ("K", "O"):
        raise DecodeError(f"delete without an old tuple (found {marker!r})")
    return Delete(relation_id, r.tuple_data(), marker == "K")


def _truncate(r: _Reader) -> Truncate:
    count, options = r.u32(), r.i8()
    relation_ids = tuple(r.u32() for _ in range(count))
    return Truncate(relation_ids, bool(options & 1), bool(options & 2))


def _message(r: _Reader) -> LogicalMessage:
    flags, lsn, prefix = r.i8(), r.u64(), r.string()
    return LogicalMessage(bool(flags & 1), lsn, prefix, r.raw(r.i32()))


_PARSERS: dict[str, Callable[[_Reader], Message]] = {
    "B": _begin,
    "C": _commit,
    "O": _origin,
    "R": _relation,
    "Y": _type,
    "I": _insert,
    "U": _update,
    "D": _delete,
    "T": _truncate,
    "M": _message,
}


def decode(data: bytes) -> Message:
    """Decode one pgoutput message (the payload of an XLogData)."""
    if not data:
        raise DecodeError("empty replication message")
    parser = _PARSERS.get(chr(data[0]))
    if parser is None:
        raise DecodeError(f"unknown pgoutput message type {chr(data[0])!r}")
    return parser(_Reader(bytes(data)))
