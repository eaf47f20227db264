"""Two answers of one aggregate compared through the transform (pure: no database).

Blue's answer becomes what green should hold with the domain's own verification
transform (``Domain.verify.expected``); green's is normalized as verification
normalizes it (``GreenTable.normalize``); then both are compared row by row, by the
row's part within the aggregate (the catalog's channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cutover.aggregate_read import Answer
from schemas.domain import Domain, GreenTable
from schemas.envelope import Version

# Rows by green table name, each by its part (None: one row per aggregate).
GreenForm = dict[str, dict[Any, tuple[Any, ...]]]
MASKED = "(values masked)"
# Compared fields carry no version; `expected` needs one, any will do.
_ANY_VERSION = Version(0, 0)


@dataclass(frozen=True)
class Mismatch:
    """One difference between the two answers: `kind` is missing (blue has it, green
    does not), extra (green has it, blue does not), different (`fields` differ) or
    unmappable (a blue row the transform rejects). `detail` holds the values, or
    MASKED when values must not be logged."""

    key: str
    table: str
    kind: str
    part: Any = None
    fields: tuple[str, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        """One line: where, what, and the values (each named) or the masked field names."""
        where = self.table if self.part is None else f"{self.table}[{self.part}]"
        if self.detail and self.detail != MASKED:
            return f"{where} {self.kind}: {self.detail}"
        text = f"{where} {self.kind}" + (" " + ",".join(self.fields) if self.fields else "")
        return f"{text}: {self.detail}" if self.detail else text


def expected_form(domain: Domain, blue: Answer) -> tuple[GreenForm, list[str]]:
    """What green should hold for blue's answer, and the reasons of rows the transform
    rejects."""
    names = domain.source.names
    rows = [dict(zip(names, row, strict=True)) for row in blue.get(domain.source.table, [])]
    expected = domain.verify.expected(rows, _ANY_VERSION)
    return expected.rows, expected.unmappable


def green_form(domain: Domain, green: Answer) -> GreenForm:
    """Green's answer, normalized and by part, as verification compares it."""
    form: GreenForm = {}
    for table in domain.verify.tables:
        held = form.setdefault(table.name, {})
        for row in green.get(table.name, []):
            part = None if table.part is None else row[table.part]
            held[part] = table.normalize(row) if table.normalize else tuple(row)
    return form


def compare(domain: Domain, key: str, blue: Answer, green: Answer, *, mask: bool) -> list[Mismatch]:
    """Every difference between transform(blue's answer) and green's answer; [] when
    they agree."""
    expected, unmappable = expected_form(domain, blue)
    actual = green_form(domain, green)
    found = [
        Mismatch(key, domain.source.table, "unmappable", detail=MASKED if mask else reason)
        for reason in unmappable
    ]
    for table in domain.verify.tables:
        want, have = expected.get(table.name, {}), actual.get(table.name, {})
        for part in sorted(set(want) | set(have), key=lambda p: "" if p is None else str(p)):
            found += _row(key, table, part, want=want.get(part), have=have.get(part), mask=mask)
    return found


def _row(
    key: str,
    table: GreenTable,
    part: Any,
    *,
    want: tuple[Any, ...] | None,
    have: tuple[Any, ...] | None,
    mask: bool,
) -> list[Mismatch]:
    if want == have:
        return []
    if have is None:
        return [Mismatch(key, table.name, "missing", part)]
    if want is None:
        return [Mismatch(key, table.name, "extra", part)]
    pairs = zip(table.fields, want, have, strict=True)
    differing = [(n, w, h) for n, w, h in pairs if w != h]
    detail = (
        MASKED
        if mask
        else "; ".join(f"{n}: blue says {w!r}, green has {h!r}" for n, w, h in differing)[:500]
    )
    fields = tuple(n for n, _, _ in differing)
    return [Mismatch(key, table.name, "different", part, fields, detail)]
