"""What a verification finds: per aggregate, what green should hold and what it holds,
the differences named key by key, and the report's figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from schemas.domain import Domain, GreenTable, VerifySpec


@dataclass(frozen=True)
class Difference:
    """One difference. `sku` is the aggregate's key (the catalog's SKU), `channel` the
    row's part within it (None for a one-row-per-aggregate table); the names are the
    catalog's because reports and the control database's records carry them."""

    sku: str
    kind: str  # missing | extra | different | unmappable
    table: str  # a green table's name, or the source table for unmappable rows
    channel: str | None = None
    fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class VerifyReport:
    """Figures of one verification. `skus` counts aggregates, `products` the rows of
    the domain's first green table, `listings` those of the others, `blue_rows` blue's
    rows read (the source table's)."""

    snapshot_lsn: int
    ranges: int = 0
    ranges_differing: int = 0
    skus: int = 0
    products: int = 0
    listings: int = 0
    blue_rows: int = 0
    differences: list[Difference] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)  # changed after every snapshot tried
    rounds: int = 1
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        """Blue's rows verified per second (0 before the verification ends)."""
        return self.blue_rows / self.seconds if self.seconds else 0.0

    @property
    def clean(self) -> bool:
        return not self.differences and not self.unsettled

    def keys(self, domain: Domain) -> list[tuple[Any, ...]]:
        """Natural keys to re-snapshot for a repair: all of each differing aggregate's."""
        skus = sorted({d.sku for d in self.differences} | set(self.unsettled))
        return [key for sku in skus for key in domain.verify.repair_keys(sku)]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clean"] = self.clean
        return data


@dataclass
class Aggregate:
    """What one aggregate should be (from blue) and is (in green), per green table."""

    sku: str
    expected: dict[str, dict[Any, tuple[Any, ...]]] = field(default_factory=dict)
    unmappable: list[str] = field(default_factory=list)
    actual: dict[str, dict[Any, tuple[Any, ...]]] = field(default_factory=dict)
    newest_lsn: int = 0  # newest version green shows for this aggregate

    def differences(self, spec: VerifySpec, source_table: str) -> list[Difference]:
        found = [
            Difference(self.sku, "unmappable", source_table, detail=r) for r in self.unmappable
        ]
        for table in spec.tables:
            expected = self.expected.get(table.name, {})
            actual = self.actual.get(table.name, {})
            for part in sorted(set(expected) | set(actual), key=_part_key):
                found += _compare(
                    self.sku,
                    table,
                    part,
                    expected=expected.get(part),
                    actual=actual.get(part),
                )
        return found


def _part_key(part: Any) -> str:
    return "" if part is None else str(part)


def _compare(
    sku: str,
    table: GreenTable,
    part: Any,
    *,
    expected: tuple[Any, ...] | None,
    actual: tuple[Any, ...] | None,
) -> list[Difference]:
    if expected == actual:
        return []
    if actual is None:
        return [Difference(sku, "missing", table.name, part)]
    if expected is None:
        return [Difference(sku, "extra", table.name, part)]
    names = table.fields
    fields = tuple(n for n, e, a in zip(names, expected, actual, strict=True) if e != a)
    detail = "; ".join(
        f"{n}: blue says {e!r}, green has {a!r}"
        for n, e, a in zip(names, expected, actual, strict=True)
        if e != a
    )
    return [Difference(sku, "different", table.name, part, fields, detail[:500])]
