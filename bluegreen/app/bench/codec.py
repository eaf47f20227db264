"""Micro-benchmark of the change envelope's encode and decode throughput."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed import generate
from schemas.codec import Codec, default_codec
from schemas.envelope import CONNECTOR_CDC, CONNECTOR_SNAPSHOT, Op, SourceTable, Version, row_event

TABLE = SourceTable("blue", "public", "legacy_product")


@dataclass(frozen=True)
class CodecFigures:
    kind: str
    events: int
    mean_bytes: float
    encode_per_s: float
    decode_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _events(count: int, kind: str) -> list[dict[str, Any]]:
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in generate(count, seed=7)]
    if kind == "snapshot":
        return [
            row_event(
                Op.READ,
                TABLE,
                before=None,
                after=row,
                version=Version(1, 0),
                txid=None,
                ts_ms=0,
                connector=CONNECTOR_SNAPSHOT,
            )
            for row in rows
        ]
    return [
        row_event(
            Op.UPDATE,
            TABLE,
            before=row,
            after={**row, "stock": 1},
            version=Version(2, i),
            txid=9,
            ts_ms=0,
            connector=CONNECTOR_CDC,
        )
        for i, row in enumerate(rows, start=1)
    ]


def run(count: int, codec: Codec | None = None, repeat: int = 3) -> list[CodecFigures]:
    codec = codec or default_codec()
    figures = []
    for kind in ("snapshot", "update"):
        events = _events(count, kind)
        best_encode = best_decode = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            encoded = [codec.encode(e) for e in events]
            best_encode = min(best_encode, time.perf_counter() - started)
            started = time.perf_counter()
            for data in encoded:
                codec.decode(data)
            best_decode = min(best_decode, time.perf_counter() - started)
        figures.append(
            CodecFigures(
                kind=kind,
                events=count,
                mean_bytes=sum(map(len, encoded)) / count,
                encode_per_s=count / best_encode,
                decode_per_s=count / best_decode,
            )
        )
    return figures
