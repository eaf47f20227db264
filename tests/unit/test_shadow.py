"""Shadowed reads' pure parts: the comparison through the transform, masking, the
gate's rule, the sampler's bounded queue."""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Any

import pytest
from pydantic import SecretStr

from bluegreen.control import ShadowCounts, ShadowWindow
from bluegreen.core.config import ShadowSettings, load_settings
from bluegreen.core.errors import ConfigError
from cutover.aggregate_read import Answer
from cutover.shadow import Job, ShadowReads
from cutover.shadow_compare import MASKED, Mismatch, compare
from cutover.shadow_gate import judge
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.transform import derive_product, listing_of, listing_upsert
from schemas.catalog.verify_spec import LISTINGS, PRODUCTS
from schemas.envelope import Version
from tests.support.events import blue_row
from tests.support.waiting import wait_until

SKU = "BG-0000001"


def blue_answer(*rows: dict[str, Any]) -> Answer:
    return {SOURCE.table: [tuple(row[name] for name in SOURCE.names) for row in rows]}


def green_answer(*rows: dict[str, Any]) -> Answer:
    """What green holds for these blue rows, as its tables return them (attributes as
    a dict, the way jsonb comes back)."""
    upserts = [listing_upsert(row, Version(1, 1)) for row in rows]
    product = derive_product(upserts)
    assert product is not None
    return {
        PRODUCTS.name: [tuple(getattr(product, f) for f in PRODUCTS.fields)],
        LISTINGS.name: [tuple(getattr(listing_of(u), f) for f in LISTINGS.fields) for u in upserts],
    }


US = blue_row()
GB = blue_row(
    id=2,
    channel="GB",
    product_type="Sneaker GB",
    attributes='{"colour": "Black", "size_uk": 8.5}',
    currency="GBP",
)


def with_field(answer: Answer, table: str, row: int, name: str, value: Any) -> Answer:
    spec = PRODUCTS if table == PRODUCTS.name else LISTINGS
    changed = list(answer[table][row])
    changed[spec.fields.index(name)] = value
    rows = list(answer[table])
    rows[row] = tuple(changed)
    return {**answer, table: rows}


def test_blue_answer_through_the_transform_matches_green() -> None:
    assert compare(CATALOG, SKU, blue_answer(US, GB), green_answer(US, GB), mask=False) == []


def test_attribute_key_order_is_not_a_difference() -> None:
    green = green_answer(US)
    product = green[PRODUCTS.name][0]
    attributes = product[PRODUCTS.fields.index("attributes")]
    reordered = dict(reversed(list(attributes.items())))
    green = with_field(green, PRODUCTS.name, 0, "attributes", reordered)
    assert compare(CATALOG, SKU, blue_answer(US), green, mask=False) == []


def test_a_different_field_is_named_with_its_values() -> None:
    green = with_field(green_answer(US, GB), LISTINGS.name, 0, "price", 1)
    [mismatch] = compare(CATALOG, SKU, blue_answer(US, GB), green, mask=False)
    assert (mismatch.key, mismatch.table, mismatch.kind) == (SKU, "channel_listing", "different")
    assert (mismatch.part, mismatch.fields) == ("US", ("price",))
    assert "blue says Decimal('99.99'), green has 1" in mismatch.describe()


def test_masking_keeps_key_table_and_fields_but_no_value() -> None:
    green = with_field(green_answer(US), PRODUCTS.name, 0, "name", "Secret name")
    [mismatch] = compare(CATALOG, SKU, blue_answer(US), green, mask=True)
    line = mismatch.describe()
    assert mismatch.fields == ("name",) and mismatch.detail == MASKED
    assert "product different name" in line and "Secret" not in line and "Trail" not in line


def test_missing_and_extra_rows() -> None:
    only_us = green_answer(US)
    found = compare(CATALOG, SKU, blue_answer(US, GB), only_us, mask=False)
    assert {(m.table, m.kind, m.part) for m in found} >= {("channel_listing", "missing", "GB")}
    found = compare(CATALOG, SKU, blue_answer(US), green_answer(US, GB), mask=False)
    assert ("channel_listing", "extra", "GB") in {(m.table, m.kind, m.part) for m in found}
    found = compare(CATALOG, SKU, blue_answer(), {}, mask=False)
    assert found == []  # neither color has the key


def test_a_row_the_transform_rejects_is_a_mismatch_masked_like_values() -> None:
    bad = blue_row(currency="EUR")
    found = compare(CATALOG, SKU, blue_answer(bad), {}, mask=True)
    assert [(m.kind, m.detail) for m in found] == [("unmappable", MASKED)]
    found = compare(CATALOG, SKU, blue_answer(bad), {}, mask=False)
    assert "EUR" in found[0].detail


def window(compared: int, mismatched: int = 0, dropped: int = 0) -> ShadowWindow:
    return ShadowWindow(10, ShadowCounts(compared, mismatched, dropped, 0), clients=2)


@pytest.mark.parametrize(
    ("found", "needed", "ok", "says"),
    [
        (None, 0, True, "not required"),
        (window(0), 0, True, "not required"),
        (window(50, mismatched=1), 0, False, "1 mismatched"),  # a mismatch always blocks
        (None, 20, False, "0/20 comparisons needed"),
        (window(19, dropped=300), 20, False, "19/20 comparisons needed"),
        (window(20, dropped=300), 20, True, "20 compared, 0 mismatched, 300 dropped"),
        (window(500, mismatched=2), 20, False, "2 mismatched"),
    ],
)
def test_the_gate_rule(found: ShadowWindow | None, needed: int, ok: bool, says: str) -> None:
    gate = judge(found, ShadowSettings(gate_min_compared=needed))
    assert gate.name == "shadow reads matched"
    assert gate.ok is ok and says in gate.figure, gate.figure


def test_counts_subtract_for_flushing() -> None:
    later, earlier = ShadowCounts(5, 1, 7, 2), ShadowCounts(3, 1, 4, 0)
    assert later.minus(earlier) == ShadowCounts(2, 0, 3, 2)
    assert later.minus(later).empty and not later.minus(earlier).empty


def test_shadow_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_SHADOW__RATIO", "0.05")
    monkeypatch.setenv("BLUEGREEN_SHADOW__MASK_VALUES", "true")
    monkeypatch.setenv("BLUEGREEN_SHADOW__GATE_MIN_COMPARED", "100")
    shadow = load_settings().shadow
    assert (shadow.ratio, shadow.mask_values, shadow.gate_min_compared) == (0.05, True, 100)
    assert shadow.gate_window_minutes == 10 and {f.name for f in fields(Job)} == {
        "key",
        "color",
        "answer",
    }
    monkeypatch.setenv("BLUEGREEN_SHADOW__RATIO", "1.5")
    with pytest.raises(ConfigError, match="BLUEGREEN_SHADOW__RATIO"):
        load_settings()


def unused_dsn() -> SecretStr:
    return SecretStr("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")


def test_a_full_queue_drops_and_counts_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparer is held by an event: one read in its hands, one queued, the rest
    dropped, and every offer returns at once (nothing here could wait on the event)."""
    entered, release = threading.Event(), threading.Event()

    def held(self: ShadowReads, job: Job) -> list[Any]:
        entered.set()
        release.wait(10)
        return []

    monkeypatch.setattr(ShadowReads, "_check", held)
    dsns = {"blue": unused_dsn(), "green": unused_dsn()}
    settings = ShadowSettings(queue_size=1, flush_interval_s=60)
    shadow = ShadowReads(CATALOG, dsns, unused_dsn(), "unit", settings, ratio=1.0)
    try:
        shadow.offer(SKU, "blue", blue_answer(US))
        assert entered.wait(5)
        for _ in range(10):
            shadow.offer(SKU, "blue", blue_answer(US))
        assert shadow.queued == 1
        assert shadow.counts == ShadowCounts(dropped=9)
        release.set()
        wait_until(lambda: shadow.counts.compared == 2, "the queued read compared", 5)
    finally:
        release.set()
        shadow.close()
    assert shadow.counts == ShadowCounts(compared=2, dropped=9)


def test_ratio_zero_shadows_nothing() -> None:
    dsns = {"blue": unused_dsn(), "green": unused_dsn()}
    shadow = ShadowReads(CATALOG, dsns, unused_dsn(), "unit", ShadowSettings(queue_size=1))
    try:
        for _ in range(5):
            shadow.offer(SKU, "blue", blue_answer(US))
        assert shadow.queued == 0 and shadow.counts == ShadowCounts()
    finally:
        shadow.close()


def test_a_comparison_that_raises_is_counted_and_the_comparer_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: ShadowReads, job: Job) -> list[Any]:
        raise KeyError(job.key)

    monkeypatch.setattr(ShadowReads, "_check", broken)
    dsns = {"blue": unused_dsn(), "green": unused_dsn()}
    shadow = ShadowReads(CATALOG, dsns, unused_dsn(), "unit", ShadowSettings(), ratio=1.0)
    try:
        for _ in range(3):
            shadow.offer(SKU, "green", blue_answer(US))
        wait_until(lambda: shadow.counts.failed == 3, "three failures counted", 5)
    finally:
        shadow.close()


@pytest.mark.parametrize(("settles_after", "mismatched"), [(1, 0), (2, 0), (None, 1)])
def test_a_difference_counts_only_if_it_outlives_every_recheck(
    monkeypatch: pytest.MonkeyPatch, settles_after: int | None, mismatched: int
) -> None:
    """Lag looks like a difference for a moment; a real one stays through the rechecks
    (here 2), which wait on the side while the comparer goes on."""
    difference = [Mismatch(SKU, "product", "different", fields=("name",))]
    rechecks: list[str] = []

    def first(self: ShadowReads, job: Job) -> list[Mismatch]:
        return difference if job.key == SKU else []

    def again(self: ShadowReads, job: Job) -> list[Mismatch]:
        rechecks.append(job.key)
        settled = settles_after is not None and len(rechecks) >= settles_after
        return [] if settled else difference

    monkeypatch.setattr(ShadowReads, "_check", first)
    monkeypatch.setattr(ShadowReads, "_recheck", again)
    dsns = {"blue": unused_dsn(), "green": unused_dsn()}
    settings = ShadowSettings(recheck_attempts=2, recheck_delay_s=0.5)
    shadow = ShadowReads(CATALOG, dsns, unused_dsn(), "unit", settings, ratio=1.0)
    try:
        shadow.offer(SKU, "blue", blue_answer(US))
        shadow.offer("OTHER", "blue", blue_answer(US))  # not held up by SKU's rechecks
        wait_until(lambda: shadow.counts.compared == 1, "the other read compared", 5)
        assert rechecks == []  # judged before SKU's first recheck was due
        wait_until(lambda: shadow.counts.compared == 2, "the difference judged", 5)
    finally:
        shadow.close()
    assert shadow.counts == ShadowCounts(compared=2, mismatched=mismatched)
    assert len(rechecks) == (settles_after or 2)
