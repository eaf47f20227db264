"""The consumer's validate step for the catalog: a staged row must fit green.

What is validated is exactly what the apply step copies into green: the staged
row (see ``green_apply.stage_row``). The constraints mirror green's columns
(lengths, numeric(12,2), non-negative stock, known channels and currencies,
timestamps with a time zone), so a row that would fail in the database is
rejected before the batch, with the column named. pydantic validates the tuple
in its Rust core, in about two microseconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from bluegreen.core.errors import BluegreenError
from schemas.catalog.green_apply import STAGE_COLUMNS

Sku = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Channel = Literal["US", "GB", "EU"]
Lsn = Annotated[int, Field(ge=0, le=2**63 - 1)]
Int4 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Partition = Annotated[int, Field(ge=0)]

LiveRow = tuple[
    Sku,  # sku
    Channel,  # channel
    Literal[False],  # deleted
    Annotated[int, Field(ge=-(2**63), le=2**63 - 1)],  # blue_id
    Annotated[str, StringConstraints(min_length=1, max_length=80)],  # product_type
    Annotated[str, StringConstraints(min_length=1, max_length=255)],  # name
    str | None,  # description
    Annotated[str, StringConstraints(min_length=2)],  # attributes (JSON object text)
    Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)],  # price
    Literal["USD", "GBP", "EUR"],  # currency
    Int4,  # stock
    bool,  # published
    AwareDatetime,  # created_at
    AwareDatetime,  # updated_at
    Lsn,  # src_lsn
    Int4,  # src_seq
    Partition,  # kafka_partition
]
TombstoneRow = tuple[
    Sku,
    Channel,
    Literal[True],
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    Lsn,
    Int4,
    Partition,
]

_STRICT = ConfigDict(strict=True)
_LIVE = TypeAdapter(LiveRow, config=_STRICT)
_TOMBSTONE = TypeAdapter(TombstoneRow, config=_STRICT)


class InvalidRowError(BluegreenError):
    """A transformed row does not fit green; the message names the column."""


def validate_row(row: tuple[Any, ...]) -> None:
    try:
        (_TOMBSTONE if row[2] is True else _LIVE).validate_python(row)
    except PydanticValidationError as exc:
        problems = []
        for error in exc.errors():
            position = error["loc"][0] if error["loc"] else None
            column = STAGE_COLUMNS[position] if isinstance(position, int) else "row"
            problems.append(f"{column}: {error['msg']}")
        raise InvalidRowError(
            f"listing {row[0]!r}/{row[1]!r} does not fit green: {'; '.join(problems)}"
        ) from exc
