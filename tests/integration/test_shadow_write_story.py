"""Shadowed reads through the whole write story: writes to green, back to blue and to
green again under the demo's application write load, with the reverse direction
running. Whichever color owns writes, the other trails it by a replication lag the
rechecks absorb: no mismatch, on a load that updates the very SKUs being read."""

from __future__ import annotations

import pytest

from bluegreen.app.demo.app_writes import AppWriteLoad
from bluegreen.app.demo.load import ReadLoad
from bluegreen.core.config import Settings, ShadowSettings
from cutover import write_rollback, write_switch
from schemas.catalog import CATALOG
from tests.integration.test_shadow_reads import skus
from tests.integration.test_write_switch import reads_on_green  # noqa: F401
from tests.integration.test_write_switch_e2e import both_ways  # noqa: F401
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def more_compared(reads: ReadLoad, more: int = 50) -> None:
    before = reads.shadow_counts().compared
    wait_until(lambda: reads.shadow_counts().compared >= before + more, f"{more} more", 60)


def test_shadowed_reads_match_while_writes_move_and_come_back(both_ways: Settings) -> None:  # noqa: F811
    settings = both_ways.model_copy(update={"shadow": ShadowSettings(gate_min_compared=10)})
    keys = skus(settings, 200)
    writes = AppWriteLoad(settings, 100, keys)
    reads = ReadLoad(settings, keys, instances=2, threads=2, shadow_ratio=0.3)
    writes.start()
    reads.start()
    try:
        wait_until(lambda: reads.shadow_counts().compared >= 50, "50 compared", 60)
        for move in (write_switch.cutover_writes, write_rollback.rollback_writes):
            report = move(settings, CATALOG)
            assert report.switched, report.as_dict()
            more_compared(reads)
        again = write_switch.cutover_writes(settings, CATALOG)
        assert again.switched, again.as_dict()
        assert next(g for g in again.gates if g.name == "shadow reads matched").ok
        more_compared(reads)
    finally:
        writes.close()
        reads.stop()
    counts = reads.shadow_counts()
    assert writes.failed == 0, writes.errors
    assert reads.stats.failed == 0, reads.stats.errors
    assert counts.mismatched == 0 and counts.failed == 0, counts
    print(counts, writes.by_color)
