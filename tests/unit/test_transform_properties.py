"""Property: whatever the history of blue, green converges to transform(final blue).

Histories are random transactions of inserts, updates (including moves to another
SKU or channel and primary-key changes) and deletes. The stream green receives is
those changes plus a snapshot taken at a random point, delivered in any order
with replays: the version guard must make all of that irrelevant.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog.transform import transform, transform_state
from schemas.envelope import Op, Version
from tests.support.events import blue_row, event
from tests.support.histories import history
from tests.support.memory_green import MemoryGreen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_changes_applied_in_order_equal_transform_of_final_blue(data: st.DataObject) -> None:
    transactions, final, _, _ = history(data.draw)
    green = MemoryGreen()
    for events in transactions:
        for ev in events:
            green.apply(transform(ev))
    assert green.state() == transform_state(final.values(), Version(0, 0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_snapshot_plus_stream_in_any_order_with_replays_converges(data: st.DataObject) -> None:
    transactions, final, snapshot_at, snapshot_rows = history(data.draw)
    # The snapshot's consistent point lies between the transactions before and after it.
    point = 1000 * snapshot_at + 500
    snapshot = [
        event(Op.READ, after=row, version=Version(point, 0)) for row in snapshot_rows.values()
    ]
    stream = [ev for events in transactions[snapshot_at:] for ev in events]
    delivered = snapshot + stream
    replays = data.draw(st.lists(st.sampled_from(delivered), max_size=10)) if delivered else []
    order = data.draw(st.permutations(delivered + replays))
    green = MemoryGreen()
    for ev in order:
        green.apply(transform(ev))
    assert green.state() == transform_state(final.values(), Version(0, 0))


def test_a_late_snapshot_row_cannot_resurrect_a_delete() -> None:
    row = blue_row()
    green = MemoryGreen()
    green.apply(transform(event(Op.DELETE, before=row, version=Version(2000, 1))))
    green.apply(transform(event(Op.READ, after=row, version=Version(1500, 0))))
    assert green.state().listings == {}
    assert green.state().products == {}
