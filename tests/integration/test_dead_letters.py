"""Superseded dead letters, told apart by green's real listing records."""

from __future__ import annotations

from typing import Any

import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from consumers.apply import create_green
from consumers.dlq import DeadLetter, classify
from schemas.catalog import CATALOG
from schemas.codec import default_codec
from schemas.envelope import Op, Version
from tests.support.events import blue_row, event

pytestmark = pytest.mark.integration

LETTER = Version(100, 1)


def tombstone(settings: Settings, records: dict[str, Version]) -> None:
    """Green holds (sku, 'US') at each version (as tombstones: a newer delete counts)."""
    with db.connect(settings.green_dsn) as conn:
        for sku, version in records.items():
            conn.execute(
                "INSERT INTO sync.listing_record (sku, channel, deleted, src_lsn, src_seq, "
                "kafka_partition) VALUES (%s, 'US', true, %s, %s, 0)",
                (sku, version.lsn, version.seq),
            )


def letter(value: bytes | None) -> DeadLetter:
    return DeadLetter(0, 0, b"key", value, {"step": "transform"})


def update(sku: str, moved_to: str | None = None, **changes: Any) -> bytes:
    before = blue_row(sku=sku)
    after = blue_row(sku=moved_to or sku, currency="EUR", **changes)  # does not transform
    return default_codec().encode(event(Op.UPDATE, before=before, after=after, version=LETTER))


def test_a_letter_is_superseded_only_when_green_is_newer_on_every_key(
    settings: Settings,
) -> None:
    create_green(settings.green_dsn, CATALOG)
    tombstone(
        settings,
        {
            "NEWER": Version(200, 1),
            "NEWER-SEQ": Version(100, 2),
            "SAME": LETTER,
            "OLDER": Version(50, 0),
            "MOVED-FROM": Version(200, 1),
            "BOTH-FROM": Version(200, 1),
            "BOTH-TO": Version(300, 4),
        },
    )
    cases = {
        "newer": (update("NEWER"), True),
        "newer, later in the same transaction": (update("NEWER-SEQ"), True),
        "same version": (update("SAME"), False),
        "older": (update("OLDER"), False),
        "no record in green": (update("ABSENT"), False),
        "moved, the new key not newer": (update("MOVED-FROM", moved_to="ABSENT"), False),
        "moved, both keys newer": (update("BOTH-FROM", moved_to="BOTH-TO"), True),
        "undecodable": (b"not avro at all", False),
        "no value": (None, False),
    }
    letters = [letter(value) for value, _ in cases.values()]
    found = classify(letters, settings.green_dsn, CATALOG)
    assert {name: x.superseded for name, x in zip(cases, found, strict=True)} == {
        name: expected for name, (_, expected) in cases.items()
    }


def test_without_green_tables_nothing_is_superseded(settings: Settings) -> None:
    found = classify([letter(update("NEWER"))], settings.green_dsn, CATALOG)
    assert [x.superseded for x in found] == [False]
