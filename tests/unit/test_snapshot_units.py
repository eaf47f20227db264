import io
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from bluegreen.control.planner import MIN_KEY, ranges
from bluegreen.core.errors import SerializationError
from schemas.catalog import SOURCE
from schemas.catalog.seed import generate
from schemas.codec import default_codec
from schemas.envelope import CONNECTOR_SNAPSHOT, Op, SourceTable, Version, row_event
from schemas.fastpath import EnvelopeEncoder
from schemas.lsn import format_lsn, parse_lsn
from schemas.rowencoder import RowEncoder
from schemas.rowvalues import timestamp_micros, unscaled_bytes

TABLE = SourceTable("blue", "public", "legacy_product")


def snapshot_values(row: tuple) -> tuple:
    """What the snapshot's binary COPY returns for a seed row (see snapshot_select)."""
    values = list(row)
    values[7] = int(row[7] * 100)
    values[11] = timestamp_micros(row[11])
    values[12] = timestamp_micros(row[12])
    return tuple(values)


def test_ranges_cover_every_key_once() -> None:
    assert ranges([]) == [(MIN_KEY, None)]
    assert ranges([1]) == [(MIN_KEY, None)]
    assert ranges([1, 11, 21]) == [(MIN_KEY, 11), (11, 21), (21, None)]
    spans = ranges([5, 50, 500])
    for key in (-(2**62), 0, 5, 49, 50, 499, 500, 2**62):
        assert sum(lo <= key and (hi is None or key < hi) for lo, hi in spans) == 1


def test_lsn_text_round_trip() -> None:
    assert parse_lsn("0/15480A0") == 0x15480A0
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"


def test_unscaled_bytes_match_avro_decimal() -> None:
    schema = parse_schema({"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 2})
    for unscaled in [0, 1, -1, 127, 128, -128, -129, 32767, 32768, 99_999_999_999, -(10**15)]:
        buffer = io.BytesIO()
        schemaless_writer(buffer, schema, Decimal(unscaled).scaleb(-2))
        expected = buffer.getvalue()
        assert bytes([len(unscaled_bytes(unscaled)) * 2]) + unscaled_bytes(unscaled) == expected


def test_compiled_row_encoder_is_byte_identical_to_fastavro() -> None:
    codec = default_codec()
    row_schema = codec.writer.row_source
    parsed = parse_schema(row_schema)
    encoder = RowEncoder(row_schema, SOURCE.columns)
    rng = random.Random(3)
    rows = [snapshot_values(r) for r in generate(3000, 11)]
    # Edges: big and negative numbers, empty and long strings, every optional unset.
    edge = list(rows[0])
    edge[0], edge[1], edge[4], edge[5], edge[9] = -(2**63), "", "x" * 70, None, None
    edge[7], edge[11] = -(10**11), -1
    rows.append(tuple(edge))
    rows.append(
        tuple(rng.getrandbits(62) if i in (0, 11, 12) else v for i, v in enumerate(rows[1]))
    )
    for values in rows:
        out = bytearray()
        encoder.encode_into(out, values)
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed, SOURCE.avro_row(values))
        assert bytes(out) == buffer.getvalue()


def test_row_encoder_refuses_a_mismatched_or_bad_row() -> None:
    codec = default_codec()
    with pytest.raises(SerializationError, match="do not match the source columns"):
        RowEncoder(codec.writer.row_source, SOURCE.columns[:-1])
    encoder = RowEncoder(codec.writer.row_source, SOURCE.columns)
    with pytest.raises(SerializationError, match="a row of 2 values"):
        encoder.encode_into(bytearray(), (1, "x"))
    values = list(snapshot_values(next(iter(generate(1, 1)))))
    values[1] = 42  # an int where a string belongs
    with pytest.raises(SerializationError, match="cannot encode row 1"):
        encoder.encode_into(bytearray(), values)


def test_snapshot_envelope_fast_path_equals_the_codec() -> None:
    codec = default_codec()
    fast = EnvelopeEncoder(codec, SOURCE.columns)
    version = Version(0x16B374D848, 0)
    ts = int(datetime(2026, 1, 2, tzinfo=UTC).timestamp() * 1000)
    fast.start_batch(TABLE, version, ts)
    for row in generate(500, 5):
        values = snapshot_values(row)
        event = row_event(
            Op.READ,
            TABLE,
            before=None,
            after=SOURCE.avro_row(values),
            version=version,
            txid=None,
            ts_ms=ts,
            connector=CONNECTOR_SNAPSHOT,
        )
        event["ts_ms"] = ts
        encoded = fast.encode(values)
        assert encoded == codec.encode(event)
        decoded = codec.decode(encoded)
        assert decoded["after"]["price"] == row[7]
        assert decoded["after"]["created_at"] == row[11]
