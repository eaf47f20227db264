"""The fault-injection suite's own pure parts: the schedule, the load's rows, the comparison."""

import json
import random
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from bluegreen.app.chaos import load_ops, load_rows
from bluegreen.app.chaos.check import compare, expected_state
from bluegreen.app.chaos.schedule import (
    ALL_KINDS,
    MAX_SNAPSHOT_FAULTS,
    SNAPSHOT_ONLY,
    Kind,
    Phase,
    parse_kinds,
    plan,
)
from bluegreen.app.chaos.services import last_words
from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed import KINDS, generate
from schemas.catalog.transform import CHANNEL_CURRENCY, GreenState, listing_upsert
from schemas.envelope import Version


@pytest.mark.parametrize("first", [0, 1, 17, 1000])
def test_any_twenty_consecutive_seeds_inject_every_kind_at_least_three_times(first: int) -> None:
    counts = Counter(f.kind for seed in range(first, first + 20) for f in plan(seed))
    assert set(counts) == set(ALL_KINDS)
    assert min(counts.values()) >= 3, counts


def test_two_runs_with_four_rotation_faults_cover_every_kind() -> None:
    kinds = {f.kind for seed in (5, 6) for f in plan(seed, rotation=4, extras_max=0)}
    assert kinds == set(ALL_KINDS)


@pytest.mark.parametrize("seed", range(40))
def test_a_schedule_is_a_function_of_its_seed_and_covers_both_phases(seed: int) -> None:
    faults = plan(seed)
    assert faults == plan(seed)
    assert {f.phase for f in faults} == {Phase.SNAPSHOT, Phase.CDC}
    assert all(f.phase == Phase.SNAPSHOT for f in faults if f.kind in SNAPSHOT_ONLY)
    snapshot = [f for f in faults if f.phase == Phase.SNAPSHOT]
    assert faults[: len(snapshot)] == snapshot  # snapshot faults first
    # In the snapshot, the kills that need it running come first; then in order of `at`.
    needy = [f for f in snapshot if f.kind in SNAPSHOT_ONLY]
    assert snapshot[: len(needy)] == needy
    cdc = faults[len(snapshot) :]
    assert [f.at for f in cdc] == sorted(f.at for f in cdc)
    assert all(0 <= f.at <= 1 and f.down_s > 0 for f in faults)
    assert len(snapshot) <= MAX_SNAPSHOT_FAULTS  # a snapshot lasts seconds: room for two


def test_fault_kinds_can_be_chosen_or_switched_off() -> None:
    assert parse_kinds("all") == ALL_KINDS
    assert parse_kinds("none") == ()
    assert plan(3, ()) == []
    assert parse_kinds("green, kafka") == (Kind.KAFKA, Kind.GREEN)
    assert {f.kind for s in range(10) for f in plan(s, (Kind.GREEN,))} == {Kind.GREEN}
    with pytest.raises(ValueError, match="unknown fault kind 'disk'"):
        parse_kinds("green,disk")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_row_the_load_writes_maps_to_green(kind: load_rows.Kind) -> None:
    rng = random.Random(1)
    for channel in load_rows.CHANNELS:
        for _ in range(50):
            row = dict(
                zip(COLUMNS[1:-1], load_rows.new_row(rng, "CX-1", channel, kind), strict=True)
            )
            row.update(id=1, updated_at=row["created_at"])
            listing_upsert(row, Version(1, 1))  # raises TransformError when invalid
            for other in load_rows.CHANNELS:  # moved to another channel
                moved = dict(row)
                moved.update(
                    channel=other,
                    currency=CHANNEL_CURRENCY[other],
                    product_type=load_rows.retype(row["product_type"], other),
                    attributes=load_rows.resize(row["attributes"], other),
                )
                listing_upsert(moved, Version(1, 1))


def test_seeded_rows_moved_to_another_channel_stay_valid() -> None:
    for values in generate(3000, 42):
        row = dict(zip(COLUMNS, values, strict=True))
        for other in load_rows.CHANNELS:
            row.update(
                channel=other,
                currency=CHANNEL_CURRENCY[other],
                product_type=load_rows.retype(row["product_type"], other),
                attributes=load_rows.resize(row["attributes"], other),
            )
            listing_upsert(row, Version(1, 1))


def test_the_extreme_values_the_load_writes_are_valid() -> None:
    row = dict(zip(COLUMNS, next(iter(generate(1, 42))), strict=True))
    for name in load_ops.UNICODE_NAMES:
        row.update(name=name, price=load_ops.MAX_PRICE, stock=None)
        assert listing_upsert(row, Version(1, 1)).name == name.strip()
    assert len({n.encode() for n in load_ops.UNICODE_NAMES}) == len(load_ops.UNICODE_NAMES)


def _state(rows: list[dict[str, Any]]) -> GreenState:
    expected, refused = expected_state(rows)
    assert refused == []
    return expected


def test_the_comparison_finds_missing_extra_and_different_rows() -> None:
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in generate(300, 7)]
    expected = _state(rows)
    assert compare(expected, _state(rows)) == []

    sku, channel = next(iter(expected.listings))
    listings = dict(expected.listings)
    listings[(sku, channel)] = replace(listings[(sku, channel)], price=Decimal("0.01"))
    listings[("GONE-1", "US")] = replace(listings[(sku, channel)], sku="GONE-1")
    products = dict(expected.products)
    dropped = sorted(products)[-1]
    del products[dropped]
    actual = GreenState(products, listings)
    found = {(d.sku, d.table, d.kind, d.fields) for d in compare(expected, actual)}
    assert found == {
        (sku, "channel_listing", "different", ("price",)),
        ("GONE-1", "channel_listing", "extra", ()),
        (dropped, "product", "missing", ()),
    }


def test_a_row_the_transform_refuses_is_reported_not_hidden() -> None:
    row = dict(zip(COLUMNS, next(iter(generate(1, 42))), strict=True))
    row["currency"] = "JPY"
    _expected, refused = expected_state([row])
    assert [d.kind for d in refused] == ["unmappable"]


def test_the_last_words_of_a_log_name_the_error() -> None:
    tail = [
        json.dumps({"event": "consuming", "level": "info"}),
        "psycopg.OperationalError: the database system is starting up",
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)",
    ]
    assert last_words(tail) == "psycopg.OperationalError: the database system is starting up"
    assert last_words([json.dumps({"level": "error", "event": "stopped", "error": "x"})]) == (
        "error stopped x"
    )
