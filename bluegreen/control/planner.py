"""Split a table into primary-key ranges of about `chunk_size` rows (pure)."""

from __future__ import annotations

from collections.abc import Sequence

MIN_KEY = -(2**63)  # the first range is open below, so no row can fall before it


def ranges(starts: Sequence[int]) -> list[tuple[int, int | None]]:
    """[lo, hi) ranges from the first key of every chunk; the last is open above.

    Open ends mean a row inserted below the smallest or above the largest key
    after planning is still read by some task (CDC carries it as well; the
    version guard makes the duplicate harmless).
    """
    if not starts:
        return [(MIN_KEY, None)]
    bounds = [MIN_KEY, *starts[1:]]
    return [(lo, hi) for lo, hi in zip(bounds, [*starts[1:], None], strict=True)]
