"""Verification: is green exactly transform(blue)? Every key, not a sample.

Blue is read at a consistent snapshot (a temporary slot's, like a snapshot
worker's) and green in the same key order; both are cut into ranges of SKUs. A
range whose two digests agree is done; inside a range that differs, products and
listings are compared row by row and every difference is named: missing (blue
has it, green does not), extra (green has it, blue does not), different (the
fields that differ), unmappable (a blue row the transform rejects).

With CDC running, a fence written after the snapshot and applied on every
partition proves green holds every change up to the snapshot; a SKU that green
changed after the snapshot cannot be judged against it and is checked again in
the next round, on a newer snapshot.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import TransformError
from producers.snapshot.reader import BlueSnapshot
from schemas.catalog import SOURCE
from schemas.catalog.blue import COLUMNS
from schemas.catalog.transform import Listing, Product, derive_product, listing_of, listing_upsert
from schemas.envelope import Version

_BLUE_QUERY = (
    f"SELECT {', '.join(c if c != 'attributes' else 'attributes::text' for c in COLUMNS)} "
    f"FROM {SOURCE.qualified} ORDER BY sku, channel"
)
_PRODUCTS = (
    "SELECT sku, product_type, name, description, attributes, primary_channel, created_at, "
    "updated_at, src_lsn FROM catalog.product {where} ORDER BY sku"
)
_LISTINGS = (
    "SELECT sku, channel, price, currency, stock, published, created_at, updated_at, src_lsn "
    "FROM catalog.channel_listing {where} ORDER BY sku, channel"
)


@dataclass(frozen=True)
class Difference:
    sku: str
    kind: str  # missing | extra | different | unmappable
    table: str  # product | channel_listing | legacy_product
    channel: str | None = None
    fields: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class VerifyReport:
    snapshot_lsn: int
    ranges: int = 0
    ranges_differing: int = 0
    skus: int = 0
    products: int = 0
    listings: int = 0
    differences: list[Difference] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)  # changed after every snapshot tried
    rounds: int = 1
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences and not self.unsettled

    def keys(self) -> list[tuple[str, str]]:
        """Natural keys (sku, channel) to re-snapshot for a repair: every channel of each SKU."""
        skus = sorted({d.sku for d in self.differences} | set(self.unsettled))
        return [(sku, channel) for sku in skus for channel in ("US", "GB", "EU")]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clean"] = self.clean
        return data


# -- canonical rows ------------------------------------------------------------------------------

# Attributes compared as key-sorted JSON; one encoder, not one per json.dumps call.
_canonical_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def _product_key(p: Product) -> tuple[Any, ...]:
    return (
        p.sku,
        p.product_type,
        p.name,
        p.description,
        _canonical_json(p.attributes),
        p.primary_channel,
        p.created_at,
        p.updated_at,
    )


_PRODUCT_FIELDS = (
    "sku",
    "product_type",
    "name",
    "description",
    "attributes",
    "primary_channel",
    "created_at",
    "updated_at",
)
_LISTING_FIELDS = (
    "sku",
    "channel",
    "price",
    "currency",
    "stock",
    "published",
    "created_at",
    "updated_at",
)


def _listing_key(item: Listing) -> tuple[Any, ...]:
    return tuple(getattr(item, f) for f in _LISTING_FIELDS)


@dataclass
class _Sku:
    """What one SKU should be (from blue) and is (in green)."""

    sku: str
    expected_product: tuple[Any, ...] | None = None
    expected_listings: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    unmappable: list[str] = field(default_factory=list)
    product: tuple[Any, ...] | None = None
    listings: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    newest_lsn: int = 0  # newest version green shows for this SKU

    def expected_digest(self, h: Any) -> None:
        h.update(
            repr((self.sku, self.expected_product, sorted(self.expected_listings.items()))).encode()
        )

    def actual_digest(self, h: Any) -> None:
        h.update(repr((self.sku, self.product, sorted(self.listings.items()))).encode())

    def differences(self) -> list[Difference]:
        found = [
            Difference(self.sku, "unmappable", "legacy_product", detail=r) for r in self.unmappable
        ]
        found += _compare(
            self.sku,
            "product",
            None,
            expected=self.expected_product,
            actual=self.product,
            names=_PRODUCT_FIELDS,
        )
        for channel in sorted(set(self.expected_listings) | set(self.listings)):
            found += _compare(
                self.sku,
                "channel_listing",
                channel,
                expected=self.expected_listings.get(channel),
                actual=self.listings.get(channel),
                names=_LISTING_FIELDS,
            )
        return found


def _compare(
    sku: str,
    table: str,
    channel: str | None,
    *,
    expected: tuple[Any, ...] | None,
    actual: tuple[Any, ...] | None,
    names: tuple[str, ...],
) -> list[Difference]:
    if expected == actual:
        return []
    if actual is None:
        return [Difference(sku, "missing", table, channel)]
    if expected is None:
        return [Difference(sku, "extra", table, channel)]
    fields = tuple(n for n, e, a in zip(names, expected, actual, strict=True) if e != a)
    detail = "; ".join(
        f"{n}: blue says {e!r}, green has {a!r}"
        for n, e, a in zip(names, expected, actual, strict=True)
        if e != a
    )
    return [Difference(sku, "different", table, channel, fields, detail[:500])]


# -- the two sides, in SKU order -----------------------------------------------------------------


def _blue_skus(snapshot: BlueSnapshot) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    current: str | None = None
    rows: list[dict[str, Any]] = []
    for values in snapshot.stream(_BLUE_QUERY):
        row = dict(zip(COLUMNS, values, strict=True))
        if row["sku"] != current:
            if current is not None:
                yield current, rows
            current, rows = row["sku"], []
        rows.append(row)
    if current is not None:
        yield current, rows


def _grouped(cursor: Iterator[tuple[Any, ...]]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    current: str | None = None
    rows: list[tuple[Any, ...]] = []
    for row in cursor:
        if row[0] != current:
            if current is not None:
                yield current, rows
            current, rows = row[0], []
        rows.append(row)
    if current is not None:
        yield current, rows


def _expected(state: _Sku, rows: list[dict[str, Any]], version: Version) -> None:
    upserts = []
    for row in rows:
        try:
            upserts.append(listing_upsert(row, version))
        except TransformError as exc:
            state.unmappable.append(str(exc))
    product = derive_product(upserts)
    state.expected_product = _product_key(product) if product else None
    state.expected_listings = {u.channel: _listing_key(listing_of(u)) for u in upserts}


def _merge(
    blue: Iterator[tuple[str, list[dict[str, Any]]]],
    products: Iterator[tuple[str, list[tuple[Any, ...]]]],
    listings: Iterator[tuple[str, list[tuple[Any, ...]]]],
    version: Version,
) -> Iterator[_Sku]:
    """One _Sku per SKU found on either side, in SKU order (a three-way merge)."""
    sources: list[Iterator[tuple[str, Any]]] = [blue, products, listings]
    heads: list[tuple[str, Any] | None] = [next(s, None) for s in sources]
    while any(h is not None for h in heads):
        sku = min(h[0] for h in heads if h is not None)
        state = _Sku(sku)
        for index, head in enumerate(heads):
            if head is None or head[0] != sku:
                continue
            if index == 0:
                _expected(state, head[1], version)
            elif index == 1:
                row = head[1][0]
                state.product = (
                    *row[:4],
                    _canonical_json(row[4]),
                    *row[5:8],
                )
                state.newest_lsn = max(state.newest_lsn, row[8])
            else:
                for row in head[1]:
                    state.listings[row[1]] = tuple(row[:8])
                    state.newest_lsn = max(state.newest_lsn, row[8])
            heads[index] = next(sources[index], None)
        yield state


# -- one round ---------------------------------------------------------------------------------


def _round(
    settings: Settings,
    range_size: int,
    only: set[str] | None,
    wait_for: Callable[[int], None] | None,
) -> tuple[VerifyReport, list[_Sku]]:
    snapshot = BlueSnapshot(
        settings.blue_dsn, SOURCE, create_timeout_s=settings.snapshot.slot_create_timeout_s
    )
    try:
        snapshot_version = snapshot.version
        if wait_for is not None:
            wait_for(snapshot_version.lsn)  # green holds every change before the snapshot
        report = VerifyReport(snapshot_lsn=snapshot_version.lsn)
        differing: list[_Sku] = []
        with db.connect(settings.green_dsn, options="-c TimeZone=UTC") as green:
            green.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            where = "WHERE sku = ANY(%(only)s)" if only is not None else ""
            params = {"only": sorted(only)} if only is not None else None
            with (
                green.cursor(name="verify_products") as products,
                green.cursor(name="verify_listings") as listings,
            ):
                products.itersize = listings.itersize = 5_000
                products.execute(_PRODUCTS.format(where=where), params)
                listings.execute(_LISTINGS.format(where=where), params)
                blue = _blue_skus(snapshot)
                if only is not None:
                    blue = ((sku, rows) for sku, rows in blue if sku in only)
                window: list[_Sku] = []
                merged = _merge(blue, _grouped(products), _grouped(listings), snapshot_version)
                for state in merged:
                    report.skus += 1
                    report.products += state.product is not None
                    report.listings += len(state.listings)
                    window.append(state)
                    if len(window) >= range_size:
                        differing += _check_range(window, report)
                        window = []
                if window:
                    differing += _check_range(window, report)
            _newest_versions(green, differing)
    finally:
        snapshot.close()
    return report, differing


def _newest_versions(green: psycopg.Connection, states: list[_Sku]) -> None:
    """The newest version green holds per SKU, tombstones included (sync.listing_record)."""
    if not states:
        return
    rows = green.execute(
        "SELECT sku, max(src_lsn) FROM sync.listing_record WHERE sku = ANY(%s) GROUP BY sku",
        ([s.sku for s in states],),
    ).fetchall()
    newest: dict[str, int] = {str(sku): int(lsn) for sku, lsn in rows}
    for state in states:
        state.newest_lsn = max(state.newest_lsn, newest.get(state.sku, 0))


def _check_range(window: list[_Sku], report: VerifyReport) -> list[_Sku]:
    report.ranges += 1
    expected, actual = hashlib.blake2b(), hashlib.blake2b()
    for state in window:
        state.expected_digest(expected)
        state.actual_digest(actual)
    if expected.digest() == actual.digest():
        return []
    report.ranges_differing += 1
    return [s for s in window if s.differences()]


def verify(
    settings: Settings,
    *,
    range_size: int = 5_000,
    rounds: int = 3,
    wait_for: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Compare transform(blue) with green. `wait_for(lsn)` must return once green applied
    every blue change before `lsn` (cutover's fence); without it, blue must be quiet."""
    started = time.monotonic()
    only: set[str] | None = None
    report = VerifyReport(snapshot_lsn=0)
    for attempt in range(1, rounds + 1):
        current, differing = _round(settings, range_size, only, wait_for)
        if only is not None:
            # Keep the whole-catalog figures of the first round; later rounds recheck a few.
            current.ranges, current.skus = report.ranges, report.skus
            current.products, current.listings = report.products, report.listings
            current.ranges_differing = report.ranges_differing
        report = current
        report.rounds = attempt
        settled = [s for s in differing if s.newest_lsn <= report.snapshot_lsn]
        moving = [s for s in differing if s.newest_lsn > report.snapshot_lsn]
        report.differences = [d for s in settled for d in s.differences()]
        report.unsettled = [s.sku for s in moving]
        if not moving:
            break
        only = {s.sku for s in moving} | {s.sku for s in settled}
    report.seconds = time.monotonic() - started
    return report
