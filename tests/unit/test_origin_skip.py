"""Loop prevention: a capture leaves out transactions another bluegreen applier wrote.

PostgreSQL 15's pgoutput sends an Origin message right after Begin when a transaction
carries a replication origin. The recorded stream (tests/unit/data/pgoutput_v1.json)
is replayed with such an Origin spliced into its first transaction — the one that
also carries the table's Relation message.
"""

from __future__ import annotations

import struct

from producers.cdc import pgoutput
from producers.cdc.changes import Broadcast, ChangeBuilder, KeyedChange, TxnBegin, TxnEnd
from producers.cdc.origins import OriginFilter
from schemas.control import FORWARD_ORIGIN, REVERSE_ORIGIN
from tests.unit.test_pgoutput import MESSAGES, SPEC, build_all


def origin_bytes(name: str, lsn: int = 0x16B3748) -> bytes:
    """An Origin message as pgoutput writes it: 'O', the origin's commit LSN, its name."""
    return b"O" + struct.pack("!Q", lsn) + name.encode() + b"\x00"


def with_origin(name: str, transaction: int = 0) -> list[pgoutput.Message]:
    """The recorded stream with an Origin after the Begin of the given transaction."""
    out: list[pgoutput.Message] = []
    begins = 0
    for message in MESSAGES:
        out.append(message)
        if isinstance(message, pgoutput.Begin):
            if begins == transaction:
                out.append(pgoutput.decode(origin_bytes(name)))
            begins += 1
    return out


def build(messages: list[pgoutput.Message], skip: str | None = REVERSE_ORIGIN) -> list:
    builder = ChangeBuilder(SPEC, "capture", skip_origin=skip)
    actions = []
    for message in messages:
        actions.extend(builder.feed(message))
    return actions


def test_the_origin_message_decodes() -> None:
    origin = pgoutput.decode(origin_bytes("bluegreen_reverse_2", 42))
    assert origin == pgoutput.Origin(42, "bluegreen_reverse_2")


def test_a_reverse_origin_transaction_is_skipped_and_still_confirmed() -> None:
    plain = build_all()
    skipped = build(with_origin("bluegreen_reverse_1"))
    plain_changes = [a for a in plain if isinstance(a, KeyedChange)]
    changes = [a for a in skipped if isinstance(a, KeyedChange)]
    # The first transaction's insert is gone; every later change still decodes (the
    # Relation message of the skipped transaction was kept).
    assert changes == plain_changes[1:]
    ends = [a for a in skipped if isinstance(a, TxnEnd)]
    assert [a for a in skipped if isinstance(a, TxnBegin)] == [
        a for a in plain if isinstance(a, TxnBegin)
    ]
    assert [e.end_lsn for e in ends] == [e.end_lsn for e in plain if isinstance(e, TxnEnd)]
    assert [e.skipped for e in ends] == [True] + [False] * (len(ends) - 1)


def fence_transaction() -> int:
    """The index of the recorded transaction that emits the fence."""
    begins = -1
    for message in MESSAGES:
        if isinstance(message, pgoutput.Begin):
            begins += 1
        elif isinstance(message, pgoutput.LogicalMessage) and message.transactional:
            return begins
    raise AssertionError("the recording has no transactional message")


def test_a_skipped_transaction_takes_its_fence_with_it() -> None:
    def fences(actions: list) -> list:
        return [a for a in actions if isinstance(a, Broadcast) and a.event["op"] == "m"]

    assert fences(build_all())
    assert not fences(build(with_origin("bluegreen_reverse_7", fence_transaction())))


def test_other_origins_and_no_filter_capture_everything() -> None:
    plain = [a for a in build_all() if isinstance(a, KeyedChange)]
    for name, skip in (
        (FORWARD_ORIGIN + "_1", REVERSE_ORIGIN),  # blue's capture skips only the reverse one
        ("pg_16400", REVERSE_ORIGIN),  # a PostgreSQL subscription's origin
        (REVERSE_ORIGIN + "_1", None),
    ):
        actions = build(with_origin(name), skip)
        assert [a for a in actions if isinstance(a, KeyedChange)] == plain
        assert not any(isinstance(a, TxnEnd) and a.skipped for a in actions)


def test_the_filter_forgets_the_origin_at_the_next_boundary() -> None:
    origins = OriginFilter(REVERSE_ORIGIN)
    insert = pgoutput.Insert(1, ("1",))
    heartbeat = pgoutput.LogicalMessage(False, 9, "bluegreen.heartbeat", b"1")
    origins.saw(pgoutput.Begin(10, 0, 1))
    origins.saw(pgoutput.Origin(5, "bluegreen_reverse_3"))
    assert origins.drops(insert) and not origins.drops(heartbeat)
    origins.saw(pgoutput.Commit(0, 10, 11, 0))
    assert not origins.drops(insert) and origins.skipped == 1
