import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form

from bluegreen.core.errors import SerializationError
from schemas.codec import (
    ENVELOPE_FILE,
    MARKER,
    ROW_FILE,
    Codec,
    build_version,
    default_codec,
    load_versions,
)
from schemas.envelope import Op, Version
from tests.support.events import blue_row, event

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def v1_json() -> tuple[dict, dict]:
    return (
        json.loads((AVRO / "v1" / ROW_FILE).read_text()),
        json.loads((AVRO / "v1" / ENVELOPE_FILE).read_text()),
    )


def v2_with_barcode() -> tuple[dict, dict]:
    """A compatible evolution: the row gains an optional field."""
    row, envelope = v1_json()
    row = copy.deepcopy(row)
    row["fields"].append({"name": "barcode", "type": ["null", "string"], "default": None})
    return row, envelope


def test_round_trip_of_every_kind_of_event() -> None:
    codec = default_codec()
    before = blue_row(description=None, stock=None)
    after = blue_row(name="Trail Black Sneaker — Größe 42 ✓", price=Decimal("0.01"))
    for original in (
        event(Op.READ, after=after, version=Version(5, 0)),
        event(Op.CREATE, after=after),
        event(Op.UPDATE, before=before, after=after),
        event(Op.DELETE, before=before),
    ):
        data = codec.encode(original)
        assert data[:2] == MARKER
        assert codec.decode(data) == original


def test_header_names_the_writer_schema_by_fingerprint() -> None:
    codec = default_codec()
    data = codec.encode(event(Op.CREATE, after=blue_row()))
    v1 = load_versions()[0]
    assert data[2:10] == v1.fingerprint
    assert codec.writer_of(data) is codec.versions[0]
    canonical = to_parsing_canonical_form(v1.parsed)
    assert v1.fingerprint == rabin_fingerprint(canonical.encode()).to_bytes(8, "little")


def rabin_fingerprint(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it out, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_rabin_reference_matches_the_spec_vector() -> None:
    assert rabin_fingerprint(b'"null"') == 0x63DD24E7CC258F8A


def test_old_message_is_read_by_the_new_schema() -> None:
    v1 = load_versions()[0]
    v2 = build_version(2, *v2_with_barcode())
    old_writer = Codec([v1])
    new_reader = Codec([v1, v2])
    data = old_writer.encode(event(Op.CREATE, after=blue_row()))
    decoded = new_reader.decode(data)
    assert decoded["after"]["barcode"] is None  # the reader's default
    assert decoded["after"]["sku"] == "BG-0000001"


def test_new_message_is_read_by_an_old_reader() -> None:
    v1 = load_versions()[0]
    v2 = build_version(2, *v2_with_barcode())
    new_writer = Codec([v1, v2])
    old_reader = Codec([v1, v2], read_version=1)  # knows v2's files, reads into v1
    data = new_writer.encode(event(Op.CREATE, after={**blue_row(), "barcode": "400123"}))
    assert data[2:10] == v2.fingerprint
    decoded = old_reader.decode(data)
    assert "barcode" not in decoded["after"]
    assert decoded["after"] == blue_row()


def test_a_reader_without_the_writer_version_says_so() -> None:
    v1 = load_versions()[0]
    v2 = build_version(2, *v2_with_barcode())
    data = Codec([v1, v2]).encode(event(Op.CREATE, after={**blue_row(), "barcode": None}))
    with pytest.raises(SerializationError, match="unknown writer schema fingerprint"):
        Codec([v1]).decode(data)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "not an Avro single-object message"),
        (lambda d: b"\x00\x01" + d[2:], "not an Avro single-object message"),
        (lambda d: d[:2] + bytes(8) + d[10:], "unknown writer schema fingerprint"),
        (lambda d: d[:-5], "corrupt message body"),
        (lambda d: d + b"\x00\x00", "trailing bytes"),
        (lambda d: d[:12] + b"\xff" * 8 + d[20:], "corrupt message"),
    ],
)
def test_corrupt_bytes_give_a_clear_error_with_the_cause(mangle, message) -> None:
    codec = default_codec()
    data = codec.encode(event(Op.CREATE, after=blue_row()))
    with pytest.raises(SerializationError, match=message):
        codec.decode(mangle(data))


def test_decode_error_keeps_its_cause() -> None:
    codec = default_codec()
    data = codec.encode(event(Op.CREATE, after=blue_row()))
    with pytest.raises(SerializationError) as err:
        codec.decode(data[:-5])
    assert err.value.__cause__ is not None


def test_encoding_a_bad_event_is_a_serialization_error() -> None:
    bad = event(Op.CREATE, after=blue_row(price="not a decimal"))
    with pytest.raises(SerializationError, match="cannot encode"):
        default_codec().encode(bad)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(SerializationError, match="v9 is not kept"):
        Codec(load_versions(), write_version=9)
