"""A reference green in memory: version guard and tombstones, as the SQL applier does."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.catalog.transform import GreenState, ListingOp, ListingUpsert, green_state
from schemas.envelope import Version


class MemoryGreen:
    def __init__(self) -> None:
        # (sku, channel) -> (version, record or None for a tombstone)
        self.records: dict[tuple[str, str], tuple[Version, ListingUpsert | None]] = {}

    def apply(self, ops: Iterable[ListingOp]) -> None:
        for op in ops:
            current = self.records.get(op.key)
            if current is not None and current[0] >= op.version:
                continue  # older or the same: a replay or a late snapshot row
            self.records[op.key] = (op.version, op if isinstance(op, ListingUpsert) else None)

    def state(self) -> GreenState:
        return green_state(record for _, record in self.records.values() if record is not None)
