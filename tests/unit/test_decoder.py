"""The compiled decoder reads exactly what fastavro reads."""

import io
from decimal import Decimal

from fastavro import schemaless_reader

from schemas.catalog.blue import COLUMNS
from schemas.catalog.seed import generate
from schemas.codec import HEADER_SIZE, default_codec
from schemas.decoder import compile_reader
from schemas.envelope import Op, Version, absent_event, message_event
from tests.support.events import TABLE, blue_row, event


def fastavro_read(data: bytes) -> dict:
    codec = default_codec()
    stream = io.BytesIO(data)
    stream.seek(HEADER_SIZE)
    return schemaless_reader(stream, codec.reader.parsed, None)


def test_every_kind_of_event_decodes_like_fastavro() -> None:
    codec = default_codec()
    reader = compile_reader(codec.reader.source)
    before = blue_row(description=None, stock=None, price=Decimal("0.00"))
    after = blue_row(name="Größe 42 ✓ " * 20, price=Decimal("9999999999.99"), id=-(2**62))
    events = [
        event(Op.READ, after=after, version=Version(2**40, 0)),
        event(Op.UPDATE, before=before, after=after, version=Version(7, 2**31 - 1)),
        event(Op.DELETE, before=before, txid=None),
        absent_event(TABLE, {"sku": "X", "channel": "EU"}, version=Version(1, 0), ts_ms=5),
        message_event(
            TABLE, prefix="bluegreen.fence", content="f-1", version=Version(3, 1), txid=9, ts_ms=-1
        ),
    ]
    for original in events:
        data = codec.encode(original)
        record, end = reader(data, HEADER_SIZE)
        assert end == len(data)
        assert record == fastavro_read(data) == original
        assert str(record["after"]["price"] if record["after"] else "") == str(
            fastavro_read(data)["after"]["price"] if record["after"] else ""
        )


def test_seed_rows_decode_like_fastavro() -> None:
    codec = default_codec()
    reader = compile_reader(codec.reader.source)
    for values in generate(2000, 9):
        row = dict(zip(COLUMNS, values, strict=True))
        data = codec.encode(event(Op.CREATE, after=row, version=Version(11, 1)))
        assert reader(data, HEADER_SIZE)[0] == fastavro_read(data)
