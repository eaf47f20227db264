"""The pgoutput decoder and the change builder, on bytes recorded from a real server
(tests/support/capture_pgoutput.py made tests/unit/data/pgoutput_v1.json)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from producers.cdc import pgoutput
from producers.cdc.changes import (
    Broadcast,
    CaptureError,
    ChangeBuilder,
    KeyedChange,
    Standalone,
    TxnBegin,
    TxnEnd,
)
from schemas.codec import Codec, build_version
from schemas.fastpath import EnvelopeEncoder
from schemas.rowvalues import Column, Kind, timestamp_micros, unscaled_bytes
from schemas.source import SourceSpec

ROW_SCHEMA = {
    "type": "record",
    "name": "T",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "big", "type": ["null", "string"]},
        {
            "name": "n",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "flag", "type": "boolean"},
        {"name": "j", "type": "string"},
    ],
}
AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "v1"
ENVELOPE = json.loads(
    (AVRO / "change_event.avsc").read_text().replace("bluegreen.blue.LegacyProduct", "test.T")
)
DATA = json.loads((Path(__file__).parent / "data" / "pgoutput_v1.json").read_text())
MESSAGES = [pgoutput.decode(bytes.fromhex(h)) for h in DATA["payloads"]]
# The capture wrote 4,000 random bytes as hex into `big`: read them straight from the
# first Insert's raw bytes, not through the decoder under test.
_FIRST_INSERT = next(bytes.fromhex(h) for h in DATA["payloads"] if h.startswith("49"))
[BIG] = [m.decode() for m in re.findall(rb"[0-9a-f]{8000}", _FIRST_INSERT)]
SPEC = SourceSpec(
    schema="public",
    table="t",
    primary_key="id",
    columns=(
        Column("id", Kind.INT),
        Column("name", Kind.STRING, nullable=True),
        Column("big", Kind.STRING, nullable=True),
        Column("n", Kind.DECIMAL2),
        Column("ts", Kind.TIMESTAMP),
        Column("flag", Kind.BOOLEAN),
        Column("j", Kind.JSON),
    ),
    aggregate_key="id",  # the recorded update renames in place (moves: test_change_keys)
    natural_key=("id",),
)


def of_type(kind: type) -> list:
    return [m for m in MESSAGES if isinstance(m, kind)]


def test_every_recorded_message_decodes() -> None:
    kinds = [type(m).__name__ for m in MESSAGES]
    assert kinds.count("Begin") == kinds.count("Commit") == 7
    assert {"Relation", "Insert", "Update", "Delete", "Truncate", "LogicalMessage"} <= set(kinds)


def test_begin_and_commit_agree_on_the_commit_lsn() -> None:
    for begin, commit in zip(of_type(pgoutput.Begin), of_type(pgoutput.Commit), strict=True):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_ts_us == commit.commit_ts_us
        assert abs(begin.commit_ts_us / 1e6 - datetime.now(UTC).timestamp()) < 10 * 365 * 86400


def test_relation_describes_the_table() -> None:
    relation = of_type(pgoutput.Relation)[0]
    assert (relation.namespace, relation.name, relation.replica_identity) == ("public", "t", "f")
    assert relation.column_names == ("id", "name", "big", "n", "ts", "flag", "j")
    assert relation.columns[0].type_oid == 23  # int4


def test_update_of_a_toasted_row_marks_the_untouched_column() -> None:
    update = of_type(pgoutput.Update)[0]
    assert update.old is not None and not update.old_is_key
    assert update.new[1] == "renamed"
    assert update.new[2] is pgoutput.UNCHANGED_TOAST
    assert isinstance(update.old[2], str) and len(update.old[2]) == 8000


def test_nulls_deletes_truncates_and_messages() -> None:
    insert = of_type(pgoutput.Insert)[1]
    assert insert.new[2] is None and insert.new[3] == "0.00"
    delete = of_type(pgoutput.Delete)[0]
    assert delete.old[0] == "3" and not delete.old_is_key
    truncate = of_type(pgoutput.Truncate)[0]
    assert truncate.relation_ids == (of_type(pgoutput.Relation)[0].relation_id,)
    fence, heartbeat = of_type(pgoutput.LogicalMessage)
    assert (fence.transactional, fence.prefix, fence.content) == (
        True,
        "bluegreen.fence",
        b"fence-1",
    )
    assert (heartbeat.transactional, heartbeat.prefix) == (False, "bluegreen.heartbeat")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (b"Z123", "unknown pgoutput message type"),
        (b"B\x00\x00", "ends early"),
        (b"R\x00\x00\x00\x01public", "unterminated string"),
    ],
)
def test_malformed_messages_raise_decode_error(data: bytes, error: str) -> None:
    with pytest.raises(pgoutput.DecodeError, match=error):
        pgoutput.decode(data)


BUILDER = ChangeBuilder(SPEC, "capture")


def build_all() -> list:
    builder = ChangeBuilder(SPEC, "capture")
    actions = []
    for message in MESSAGES:
        actions.extend(builder.feed(message))
    return actions


def event_of(action) -> dict:
    return BUILDER.event_of(action) if isinstance(action, KeyedChange) else action.event


def test_changes_become_versioned_events_in_commit_order() -> None:
    actions = build_all()
    events = [event_of(a) for a in actions if isinstance(a, (KeyedChange, Broadcast, Standalone))]
    assert [e["op"] for e in events] == ["c", "u", "d", "c", "c", "d", "m", "m", "t"]
    begins = [a for a in actions if isinstance(a, TxnBegin)]
    ends = [a for a in actions if isinstance(a, TxnEnd)]
    assert len(begins) == len(ends) == 7
    first = events[0]
    assert first["after"] == {
        "id": 1,
        "name": "first",
        "big": BIG,
        "n": unscaled_bytes(1250),
        "ts": timestamp_micros(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        "flag": True,
        "j": '{"size_us": 9.5}',
    }
    assert first["source"]["lsn"] == begins[0].commit_lsn and first["source"]["seq"] == 1
    assert Decimal(int.from_bytes(first["after"]["n"], "big", signed=True)).scaleb(-2) == Decimal(
        "12.50"
    )


def test_toast_unchanged_value_is_taken_from_the_old_row() -> None:
    update = next(event_of(a) for a in build_all() if isinstance(a, KeyedChange) and a.op == "u")
    assert update["after"]["name"] == "renamed"
    assert update["after"]["big"] == update["before"]["big"] == BIG


def test_primary_key_change_is_a_delete_and_a_create_in_one_transaction() -> None:
    events = [event_of(a) for a in build_all() if isinstance(a, KeyedChange)]
    delete, create = events[2], events[3]
    assert (delete["op"], delete["before"]["id"]) == ("d", 1)
    assert (create["op"], create["after"]["id"]) == ("c", 2)
    assert create["after"]["big"] == delete["before"]["big"]  # the TOASTed value travels
    assert delete["source"]["lsn"] == create["source"]["lsn"]
    assert (delete["source"]["seq"], create["source"]["seq"]) == (1, 2)


def test_fence_truncate_and_heartbeat_are_broadcast() -> None:
    actions = build_all()
    broadcasts = [a.event for a in actions if isinstance(a, Broadcast)]
    assert [(e["op"], (e["message"] or {}).get("content")) for e in broadcasts] == [
        ("m", "fence-1"),
        ("t", None),
    ]
    [standalone] = [a for a in actions if isinstance(a, Standalone)]
    assert standalone.event["message"]["prefix"] == "bluegreen.heartbeat"


def test_other_tables_are_ignored() -> None:
    builder = ChangeBuilder(SPEC, "capture")
    other = pgoutput.Relation(
        9, "public", "other", "f", (pgoutput.RelationColumn("id", 23, -1, True),)
    )
    builder.feed(other)
    builder.feed(pgoutput.Begin(100, 0, 1))
    assert builder.feed(pgoutput.Insert(9, ("1",))) == []
    assert builder.ignored == 1


def test_a_key_only_old_row_is_refused_with_the_fix() -> None:
    builder = ChangeBuilder(SPEC, "capture")
    relation = of_type(pgoutput.Relation)[0]
    builder.feed(pgoutput.Relation(relation.relation_id, "public", "t", "d", relation.columns))
    builder.feed(pgoutput.Begin(100, 0, 1))
    key_only = pgoutput.Delete(
        relation.relation_id, ("1", None, None, None, None, None, None), True
    )
    with pytest.raises(CaptureError, match="REPLICA IDENTITY FULL"):
        builder.feed(key_only)
    unchanged = pgoutput.Update(
        relation.relation_id,
        None,
        False,
        ("1", "x", pgoutput.UNCHANGED_TOAST, "1.00", "2024-01-01 00:00:00+00", "t", "{}"),
    )
    with pytest.raises(CaptureError, match="TOASTed columns"):
        builder.feed(unchanged)


def test_fast_envelope_encoding_equals_the_codec() -> None:
    codec = Codec([build_version(1, ROW_SCHEMA, ENVELOPE)])
    fast = EnvelopeEncoder(codec, SPEC.columns)
    changes = [a for a in build_all() if isinstance(a, KeyedChange)]
    assert len(changes) == 6
    for change in changes:
        event = BUILDER.event_of(change)
        event["ts_ms"] = 1_714_564_800_123
        encoded = fast.encode_change(
            change.op,
            BUILDER.table,
            before=change.before,
            after=change.after,
            connector="cdc",
            version=change.version,
            txid=change.txid,
            ts_ms=change.ts_ms,
            event_ts_ms=1_714_564_800_123,
        )
        assert encoded == codec.encode(event)
        assert codec.decode(encoded)["after" if change.after else "before"]["id"] in (1, 2, 3)
