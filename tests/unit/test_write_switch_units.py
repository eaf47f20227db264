"""The write switch's pure parts: phases, the route notice, the router's hold logic."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import SecretStr

from bluegreen.control import TRANSITIONS, Phase, WriteRoute, parse_write_notice
from bluegreen.core.errors import BluegreenError
from cutover.app_roles import as_role
from cutover.write_gate import WriteGate, WritePauseTimeoutError
from cutover.write_switch import parse_budget


def reachable(start: Phase) -> set[Phase]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_write_switch_phases_and_their_way_back() -> None:
    assert Phase.WRITES_SWITCHING in TRANSITIONS[Phase.READS_ON_GREEN]
    assert TRANSITIONS[Phase.WRITES_SWITCHING] == {Phase.WRITES_ON_GREEN, Phase.READS_ON_GREEN}
    assert TRANSITIONS[Phase.WRITES_ON_GREEN] == {Phase.WRITES_ROLLING_BACK, Phase.COMPLETED}
    assert TRANSITIONS[Phase.WRITES_ROLLING_BACK] == {Phase.READS_ON_GREEN, Phase.WRITES_ON_GREEN}
    # reads cannot go back to blue while green owns writes: roll the writes back first
    assert Phase.ROLLED_BACK not in TRANSITIONS[Phase.WRITES_ON_GREEN]
    assert reachable(Phase.PLANNED) == set(Phase)


def test_the_read_switch_transitions_are_kept() -> None:
    assert {Phase.ROLLED_BACK, Phase.COMPLETED} < TRANSITIONS[Phase.READS_ON_GREEN]
    assert Phase.READS_ON_GREEN in TRANSITIONS[Phase.ROLLED_BACK]
    assert Phase.READS_ON_GREEN in TRANSITIONS[Phase.IN_SYNC]


def test_a_route_travels_in_its_notice() -> None:
    route = WriteRoute("green", 7, True, 1500)
    assert parse_write_notice(route.notice()) == route
    assert parse_write_notice("blue:8:0:1000") == WriteRoute("blue", 8, False, 1000)


def test_a_write_goes_straight_through_when_not_paused() -> None:
    gate = WriteGate(WriteRoute("blue", 1, False, 1000))
    color, held = gate.enter()
    assert color == "blue" and held < 0.05 and gate.inflight("blue") == 1
    gate.leave("blue")
    assert gate.inflight("blue") == 0
    assert gate.stats.writes == 1 and gate.stats.holds == []


def test_a_paused_write_is_held_then_goes_to_the_new_owner() -> None:
    gate = WriteGate(WriteRoute("blue", 1, True, 2000))
    got: list[tuple[str, float]] = []
    writer = threading.Thread(target=lambda: got.append(gate.enter()))
    writer.start()
    time.sleep(0.2)
    assert not got  # held, not failed
    assert gate.learn(WriteRoute("green", 2, True, 2000))  # flipped, still paused
    time.sleep(0.05)
    assert not got
    assert gate.learn(WriteRoute("green", 3, False, 2000))  # resumed
    writer.join(2)
    assert got and got[0][0] == "green" and 0.2 <= got[0][1] < 1.0
    assert gate.stats.holds == [got[0][1]] and gate.stats.timeouts == 0


def test_an_older_route_is_ignored() -> None:
    gate = WriteGate(WriteRoute("green", 5, False, 1000))
    assert not gate.learn(WriteRoute("blue", 4, True, 1000))
    assert not gate.learn(WriteRoute("blue", 5, True, 1000))
    assert gate.route == WriteRoute("green", 5, False, 1000)


def test_a_hold_is_bounded_by_the_budget_and_the_grace() -> None:
    gate = WriteGate(WriteRoute("blue", 1, True, 100), grace_s=0.1)
    started = time.monotonic()
    with pytest.raises(WritePauseTimeoutError, match=r"paused for more than 0\.2s"):
        gate.enter()
    assert 0.19 <= time.monotonic() - started < 1.0
    assert gate.stats.timeouts == 1 and gate.inflight("blue") == 0


def test_the_pause_budget_is_read_like_a_person_writes_it() -> None:
    assert parse_budget("1s") == 1.0
    assert parse_budget("500ms") == 0.5
    assert parse_budget("0.8") == 0.8
    for wrong in ("fast", "10ms", "2m"):
        with pytest.raises(BluegreenError):
            parse_budget(wrong)


def test_the_application_dsn_is_the_same_database_as_the_app_role() -> None:
    dsn = SecretStr("postgresql://postgres@127.0.0.1:16432/blue?sslmode=disable")
    assert as_role(dsn).get_secret_value() == (
        "postgresql://bluegreen_app@127.0.0.1:16432/blue?sslmode=disable"
    )
    other = SecretStr("postgres://u:p@h/db")
    assert as_role(other, "x").get_secret_value() == "postgres://x@h/db"
