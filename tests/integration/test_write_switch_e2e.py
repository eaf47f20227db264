"""The whole write story with the reverse direction running: writes to green, back to
blue, to green again, under a live write load through the router; every acknowledged write on both
colors at the end, and both verifications exact."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from bluegreen.core.config import Settings
from bluegreen.core.kafka import delete_topics, ensure_topic
from bluegreen.core.metrics import Metrics
from consumers.reverse import service as reverse_apply
from cutover import fence, verify_reverse, write_rollback, write_switch
from cutover.verify import verify
from producers.reverse import service as reverse_cdc
from schemas.catalog import CATALOG
from tests.integration.test_write_switch import reads_on_green  # noqa: F401
from tests.support.app_writers import RouterWriters, percentile, skus_in, writing
from tests.support.cdc import wait_confirmed
from tests.support.consume import wait_drained
from tests.support.service_thread import ServiceThread

pytestmark = pytest.mark.integration


@pytest.fixture
def both_ways(reads_on_green: Settings) -> Iterator[Settings]:  # noqa: F811
    """Reads on green; reverse capture and reverse applier running (on a topic of the
    test's own)."""
    kafka = reads_on_green.kafka.model_copy(
        update={"reverse_topic": f"{reads_on_green.kafka.topic}.reverse"}
    )
    settings = reads_on_green.model_copy(
        update={
            "kafka": kafka,
            "reverse_apply": reads_on_green.reverse_apply.model_copy(
                update={"group_id": f"rev-{kafka.topic}"}
            ),
        }
    )
    ensure_topic(kafka, kafka.reverse_topic, kafka.partitions)
    assert CATALOG.reverse is not None
    capture = reverse_cdc.ReverseCdcService(settings, CATALOG.reverse, Metrics(), poll_s=0.1)
    applier = reverse_apply.ReverseApplyService(settings, CATALOG, Metrics())
    with ExitStack() as stack:
        for service, name in ((capture, "reverse-cdc"), (applier, "reverse-apply")):
            thread = ServiceThread(service, name)
            stack.callback(thread.check)
            stack.callback(thread.stop)
        yield settings
    delete_topics(kafka, [kafka.reverse_topic])


def held_ms(writers: RouterWriters, since: int) -> dict[str, float]:
    """p99 and max hold (ms) of the writes held since the `since`-th hold."""
    holds = writers.router.hold_stats.holds[since:]
    return {
        "held": len(holds),
        "p99": percentile(holds, 0.99) * 1000,
        "max": max(holds, default=0.0) * 1000,
    }


def test_writes_to_green_back_and_again_nothing_lost_both_ways_exact(both_ways: Settings) -> None:
    settings = both_ways
    figures: dict[str, object] = {}
    with writing(settings, "E2E") as writers:
        threading.Event().wait(1.0)
        before = len(writers.router.hold_stats.holds)
        first = write_switch.cutover_writes(settings, CATALOG, timeout_s=120)
        threading.Event().wait(2.0)  # held writes record their hold once released
        figures["cutover"] = (first.pause_ms, first.steps_ms, held_ms(writers, before))
        before = len(writers.router.hold_stats.holds)
        back = write_rollback.rollback_writes(settings, CATALOG)
        written_on_green = writers.by_color("green")
        threading.Event().wait(2.0)
        figures["rollback"] = (back.pause_ms, back.steps_ms, held_ms(writers, before))
        before = len(writers.router.hold_stats.holds)
        again = write_switch.cutover_writes(settings, CATALOG, timeout_s=120)
        threading.Event().wait(2.0)
        figures["cutover again"] = (again.pause_ms, again.steps_ms, held_ms(writers, before))
    print(figures)
    assert writers.failures == []
    assert first.switched and back.switched and again.switched
    assert back.refreshed_keys is not None and back.refreshed_keys >= len(written_on_green) > 0
    for _pause, _steps, held in figures.values():  # type: ignore[misc]
        assert held["max"] <= 1000  # the default budget
    on_blue, on_green = writers.by_color("blue"), writers.by_color("green")
    wait_confirmed(settings)
    wait_drained(settings)
    reverse_check = verify_reverse.verify_reverse(settings, CATALOG, fence_timeout_s=120)
    for color in ("blue", "green"):
        assert skus_in(settings, color, on_blue | on_green) == on_blue | on_green, color
    assert reverse_check.clean, reverse_check.as_dict()
    forward_check = verify(settings, CATALOG, wait_for=fence.waiter(settings, 120))
    assert forward_check.clean, forward_check.as_dict()
