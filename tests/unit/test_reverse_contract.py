"""The reverse stream's framing: what green's capture writes, blue's applier reads."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_writer

from bluegreen.core.errors import SerializationError
from schemas import reverse
from schemas.envelope import Op, Version


def test_a_row_change_and_a_fence_round_trip() -> None:
    row = reverse.GreenChange(
        "SKU-1", "catalog.product", Op.UPDATE, Version(1 << 40, 3), 17, xid=4_000_000_000
    )
    fence = reverse.GreenChange(
        "", "", Op.MESSAGE, Version(99, 1), 18, prefix="bluegreen.fence", content="f-1"
    )
    for change in (row, fence):
        assert reverse.decode(reverse.encode(change)) == change


@pytest.mark.parametrize("data", [None, b"", b"\x00\x01", b"\xb6\x01", b"\xb6\x01\x02"])
def test_anything_else_is_refused_as_a_serialization_error(data: bytes | None) -> None:
    with pytest.raises(SerializationError):
        reverse.decode(data)


def test_trailing_bytes_are_refused() -> None:
    change = reverse.GreenChange("k", "t", Op.DELETE, Version(1, 1), 1)
    with pytest.raises(SerializationError):
        reverse.decode(reverse.encode(change) + b"\x00")


def test_a_version_1_message_still_decodes_without_a_transaction_id() -> None:
    record = {"key": "k", "table": "t", "op": "u", "lsn": 5, "seq": 1, "ts_ms": 2}
    record |= {"prefix": None, "content": None}
    out = io.BytesIO()
    schemaless_writer(out, reverse._SCHEMAS[1], record)
    decoded = reverse.decode(bytes([0xB6, 1]) + out.getvalue())
    assert decoded == reverse.GreenChange("k", "t", Op.UPDATE, Version(5, 1), 2)
    assert decoded.xid == 0
