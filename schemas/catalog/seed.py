"""Deterministic demo data for blue: the legacy catalog of a shoe and apparel shop.

Same seed and count, same rows, byte for byte. Most SKUs are sold in all three
channels, some in two or one; each channel row has its own copy of the name and
description (British spelling for GB, German and French for EU), its channel's
product type and attribute names, and prices in the channel's currency. A share
of descriptions is longer than 2 KB so PostgreSQL TOASTs them; some are NULL, as
are some stock figures, as the legacy schema allows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from schemas.catalog.transform import CHANNEL_CURRENCY, GRAMS_PER_POUND

T = TypeVar("T")
EPOCH = datetime(2019, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
FX = {"US": Decimal(1), "GB": Decimal("0.79"), "EU": Decimal("0.92")}


@dataclass(frozen=True)
class Kind:
    name: str
    sizes: str  # "shoe", "letter" or "none"
    base_price: tuple[int, int]
    weight_g: tuple[int, int]


KINDS = (
    Kind("Sneaker", "shoe", (49, 220), (550, 1100)),
    Kind("Running Shoe", "shoe", (69, 260), (480, 900)),
    Kind("Boot", "shoe", (89, 380), (900, 2100)),
    Kind("Sandal", "shoe", (19, 120), (250, 600)),
    Kind("T-Shirt", "letter", (9, 60), (120, 260)),
    Kind("Hoodie", "letter", (29, 140), (450, 900)),
    Kind("Jacket", "letter", (59, 480), (600, 1800)),
    Kind("Backpack", "none", (25, 240), (400, 1600)),
)
COLORS_US = ("Black", "White", "Gray", "Navy", "Red", "Olive", "Sand", "Cobalt")
COLORS_GB = {"Gray": "Grey"}
COLORS_EU = {
    "Black": "Schwarz",
    "White": "Blanc",
    "Gray": "Grau",
    "Navy": "Marine",
    "Red": "Rouge",
    "Olive": "Olivgrün",
    "Sand": "Sable",
    "Cobalt": "Kobaltblau",
}
MATERIALS = ("leather", "suede", "canvas", "mesh", "cotton", "wool", "recycled polyester")
ADJECTIVES = ("Classic", "Trail", "Urban", "Aero", "Summit", "Coastal", "Nordic", "Metro", "Pulse")
EU_WORDS = ("Größe", "Qualität", "léger", "confort", "für jeden Tag", "fabriqué avec soin")
LETTER = ("XS", "S", "M", "L", "XL", "XXL")
PARAGRAPHS = (
    "Built for long days on your feet, with a cushioned footbed and a grippy outsole.",
    "The upper is cut from responsibly sourced materials and stitched for durability.",
    "Pairs with everything from tailored trousers to weekend denim.",
    "Care: wipe clean with a damp cloth; air dry away from direct heat.",
    "Every pair is inspected by hand before it leaves our workshop in Porto.",
    "Breathable lining keeps things cool; the reinforced heel keeps its shape.",
    "Sizing runs true; if you are between sizes, we suggest the larger one.",
    "Free returns within 30 days — no questions asked, just send it back unworn.",
)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT)


PARTS = (
    "sole",
    "upper",
    "heel",
    "toe cap",
    "insole",
    "midsole",
    "outsole",
    "lining",
    "tongue",
    "collar",
    "eyelet",
    "seam",
    "zip",
    "hood",
    "cuff",
    "strap",
    "panel",
    "pocket",
)


class _Rng:
    """random.Random with faster picks (the seed draws millions of them)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 - demo data, not cryptography
        self.random = self._random.random
        self.getrandbits = self._random.getrandbits

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def between(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))


def _description(rng: _Rng, channel: str, name: str) -> str | None:
    roll = rng.random()
    if roll < 0.08:
        return None
    body = " ".join(rng.pick(PARAGRAPHS) for _ in range(rng.between(1, 4)))
    if roll > 0.92:
        # A long sheet of lot codes (3-5 KB that compress poorly): PostgreSQL TOASTs it.
        size = rng.between(1100, 2000)
        codes = rng.getrandbits(8 * size).to_bytes(size, "big").hex()
        lots = " ".join(codes[i : i + 16] for i in range(0, len(codes), 16))
        body = f"{body}\n\nTraceability ({rng.pick(PARTS)}): {lots}."
    if channel == "EU":
        body = f"{name} — {rng.pick(EU_WORDS)}. {body}"
    elif channel == "GB":
        body = body.replace("color", "colour").replace("center", "centre")
    return body


def _attributes(rng: _Rng, kind: Kind, channel: str, base: dict[str, object]) -> str:
    attrs: dict[str, object] = {"material": base["material"]}
    attrs["color" if channel == "US" else "colour"] = base["color"]
    if kind.sizes == "shoe":
        us = base["size_us"]
        assert isinstance(us, Decimal)
        size = {"US": us, "GB": us - 1, "EU": us + 33}[channel]
        key = {"US": "size_us", "GB": "size_uk", "EU": "size_eu"}[channel]
        attrs[key] = float(size) if size % 1 else int(size)
    elif kind.sizes == "letter":
        attrs[{"US": "size_us", "GB": "size_uk", "EU": "size_eu"}[channel]] = base["letter"]
    else:
        attrs["volume_l"] = base["volume_l"]
    grams = base["weight_g"]
    assert isinstance(grams, int)
    if channel == "US":
        attrs["weight_lb"] = float(_money(Decimal(grams) / GRAMS_PER_POUND))
    else:
        attrs["weight_g"] = grams
    if rng.random() < 0.1:
        attrs["care"] = "hand wash" if kind.sizes == "letter" else "wipe clean"
    return json.dumps(attrs, ensure_ascii=False, sort_keys=True)


def _channels(rng: _Rng) -> tuple[str, ...]:
    roll = rng.random()
    if roll < 0.70:
        return ("US", "GB", "EU")
    if roll < 0.85:
        return rng.pick((("US", "GB"), ("US", "EU"), ("GB", "EU")))
    return (rng.pick(("US", "GB", "EU")),)


def generate(count: int, seed: int = 42) -> Iterator[tuple[object, ...]]:
    """`count` blue rows in COLUMNS order, ids 1..count, the same for the same seed.

    Rows of one SKU mostly have neighbouring ids; for a fifth of the SKUs the EU
    row was added later and comes at the end, as in a shop that opened EU late.
    """
    rng = _Rng(seed)
    late: list[tuple[object, ...]] = []
    next_id = 1
    product = 0
    while next_id + len(late) <= count:
        product += 1
        rows = list(_product_rows(rng, product))
        if rows[-1][1] == "EU" and len(rows) > 1 and rng.random() < 0.2:
            late.append(rows.pop())
        for row in rows:
            if next_id + len(late) > count:
                break
            yield (next_id, *row)
            next_id += 1
    for row in late:
        if next_id > count:
            break
        yield (next_id, *row)
        next_id += 1


def _product_rows(rng: _Rng, number: int) -> Iterator[tuple[object, ...]]:
    kind = rng.pick(KINDS)
    sku = f"BG-{number:07d}"
    color = rng.pick(COLORS_US)
    base: dict[str, object] = {
        "color": color,
        "material": rng.pick(MATERIALS),
        "size_us": Decimal(rng.between(12, 26)) / 2,  # US 6 .. 13 in half sizes
        "letter": rng.pick(LETTER),
        "volume_l": rng.pick((12, 18, 22, 28, 35)),
        "weight_g": rng.between(*kind.weight_g),
    }
    adjective = rng.pick(ADJECTIVES)
    usd = Decimal(rng.between(*kind.base_price)) - Decimal("0.01")
    created = EPOCH + timedelta(seconds=rng.between(0, 5 * 365 * 86400))
    for channel in _channels(rng):
        base["color"] = {"US": color, "GB": COLORS_GB.get(color, color)}.get(
            channel, COLORS_EU[color]
        )
        name = f"{adjective} {base['color']} {kind.name}"
        if channel == "EU":
            name = f"{adjective} {kind.name} {base['color']} — {rng.pick(EU_WORDS)}"
        updated = created + timedelta(seconds=rng.between(0, 400 * 86400), microseconds=number)
        yield (
            sku,
            channel,
            f"{kind.name} {channel}",
            name,
            _description(rng, channel, name),
            _attributes(rng, kind, channel, base),
            _money(usd * FX[channel]),
            CHANNEL_CURRENCY[channel],
            None if rng.random() < 0.05 else rng.between(0, 500),
            rng.random() < 0.85,
            created,
            updated,
        )
