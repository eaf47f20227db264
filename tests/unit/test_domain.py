"""The domain plug-in: the declarations agree with what cannot be generated from them,
and what is generated from them behaves as the hand-written versions did."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB

from bluegreen.core.errors import ConfigError
from schemas.catalog import CATALOG, SOURCE
from schemas.catalog.blue import LegacyProduct
from schemas.catalog.staged import STAGE, stage_row
from schemas.catalog.transform import transform
from schemas.codec import load_versions
from schemas.domain import Domain, load_domain
from schemas.envelope import Op, Version
from schemas.rowvalues import Kind
from schemas.source import SourceSpec
from schemas.stage import InvalidRowError, StageColumn
from tests.support import tiny
from tests.support.events import blue_row, event

_SQLALCHEMY_KIND = {
    BigInteger: Kind.LONG,
    Integer: Kind.INT,
    String: Kind.STRING,
    Text: Kind.STRING,
    JSONB: Kind.JSON,
    Numeric: Kind.DECIMAL2,
    Boolean: Kind.BOOLEAN,
    DateTime: Kind.TIMESTAMP,
}


def test_the_blue_model_agrees_with_the_source_spec() -> None:
    model = [(c.name, type(c.type), c.nullable) for c in LegacyProduct.__table__.columns]
    declared = [(c.name, c.kind, c.nullable) for c in SOURCE.columns]
    assert [(n, _SQLALCHEMY_KIND[t], bool(null)) for n, t, null in model] == declared


@pytest.mark.parametrize(
    "spec", [pytest.param(SOURCE, id="catalog"), pytest.param(tiny.SOURCE, id="tiny")]
)
def test_the_published_avro_row_agrees_with_the_source_spec(spec: SourceSpec) -> None:
    newest = load_versions(spec.avro)[-1].row_source
    published = [{"name": f["name"], "type": f["type"]} for f in newest["fields"]]
    assert published == spec.avro_fields()


def test_the_seed_copy_types_follow_the_source_spec() -> None:
    assert SOURCE.native_copy_types() == [
        "int8", "text", "text", "text", "text", "text", "jsonb",
        "numeric", "text", "int4", "bool", "timestamptz", "timestamptz",
    ]  # fmt: skip


# -- the staged row ---------------------------------------------------------------------------


def _live() -> tuple[Any, ...]:
    (op,) = transform(event(Op.CREATE, after=blue_row()))
    return stage_row(op, 3)


def _tombstone() -> tuple[Any, ...]:
    (op,) = transform(event(Op.DELETE, before=blue_row()))
    return stage_row(op, 3)


def _with(row: tuple[Any, ...], **values: Any) -> tuple[Any, ...]:
    changed = list(row)
    for name, value in values.items():
        changed[STAGE.names.index(name)] = value
    return tuple(changed)


def test_valid_live_rows_and_tombstones_pass() -> None:
    STAGE.validate(_live())
    STAGE.validate(_tombstone())
    STAGE.validate(_with(_live(), description=None))


@pytest.mark.parametrize(
    ("values", "column"),
    [
        ({"sku": "X" * 33}, "sku"),
        ({"sku": ""}, "sku"),
        ({"channel": "FR"}, "channel"),
        ({"currency": "CHF"}, "currency"),
        ({"price": Decimal("12345678901.50")}, "price"),
        ({"price": Decimal("1.005")}, "price"),
        ({"price": Decimal("-1.00")}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": 2**31}, "stock"),
        ({"name": ""}, "name"),
        ({"attributes": ""}, "attributes"),
        ({"created_at": datetime(2024, 5, 1)}, "created_at"),  # naive
        ({"blue_id": "1"}, "blue_id"),  # strict: no coercion
        ({"src_lsn": -1}, "src_lsn"),
        ({"product_type": None}, "product_type"),
    ],
)
def test_a_row_that_does_not_fit_green_is_refused_naming_the_column(
    values: dict[str, Any], column: str
) -> None:
    refused = rf"^listing '[^']*'/'\w+' does not fit green: {column}: "
    with pytest.raises(InvalidRowError, match=refused):
        STAGE.validate(_with(_live(), **values))


def test_a_tombstone_carries_no_payload() -> None:
    with pytest.raises(InvalidRowError, match="price: "):
        STAGE.validate(_with(_tombstone(), price=Decimal("1.00")))


def test_the_staging_ddl_and_copy_come_from_the_declaration() -> None:
    ddl = CATALOG.stage.ddl().as_string(None)
    assert '"sku" varchar(32) NOT NULL' in ddl
    assert '"price" numeric(12, 2),' in ddl
    assert ddl.endswith("ON COMMIT DELETE ROWS")
    copy = CATALOG.stage.copy().as_string(None)
    assert copy.startswith('COPY "stage_listing" ("sku", "channel", "deleted", "blue_id"')
    assert STAGE.copy_types[:4] == ["varchar", "varchar", "bool", "int8"]
    assert len(STAGE.copy_types) == len(_live()) == 17


def test_a_staged_column_type_must_be_one_the_engine_knows() -> None:
    with pytest.raises(ValueError, match="unsupported type"):
        StageColumn("x", "money")


# -- the domain object --------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [CATALOG, tiny.TINY], ids=["catalog", "tiny"])
def test_a_domain_travels_to_other_processes_by_name(domain: Domain) -> None:
    assert pickle.loads(pickle.dumps(domain)) is domain
    assert load_domain(domain.ref) is domain


def test_a_source_spec_travels_with_its_avro_contract() -> None:
    copy = pickle.loads(pickle.dumps(tiny.SOURCE))
    assert copy.avro == tiny.SOURCE.avro
    assert copy.avro is not None and Path(copy.avro).is_dir()


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("schemas.nowhere:X", "not found"),
        ("schemas.catalog:NOTHING", "not found"),
        ("schemas.catalog:SOURCE", "not a Domain"),
    ],
)
def test_a_wrong_domain_reference_is_a_config_error(ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_domain(ref)


def test_the_tiny_domain_stages_validates_and_encodes_without_the_catalog() -> None:
    codec = tiny.TINY.codec()
    row = {"id": 7, "name": "lamp"}
    envelope = {
        "before": None,
        "after": row,
        "key": None,
        "op": Op.CREATE.value,
        "source": {
            "connector": "cdc", "db": "blue", "schema": "public", "table": "tiny",
            "lsn": 100, "seq": 1, "txid": None, "ts_ms": 0, "snapshot": False,
        },
        "message": None,
        "ts_ms": 0,
    }  # fmt: skip
    decoded = codec.decode(codec.encode(envelope))
    (op,) = tiny.transform(decoded)
    staged = tiny.stage_row(op, 0)
    assert staged == (7, False, "LAMP", 100, 1, 0)
    tiny.STAGE.validate(staged)
    tiny.STAGE.validate(tiny.stage_row(tiny.Delete(7, Version(101, 1)), 0))
    with pytest.raises(InvalidRowError, match=r"^item 7 does not fit green: label: "):
        tiny.STAGE.validate((7, False, "", 100, 1, 0))
    assert json.loads(json.dumps(tiny.SOURCE.avro_fields())) == tiny.SOURCE.avro_fields()


def test_a_domain_without_supersession_is_allowed() -> None:
    assert tiny.TINY.superseded is None
    assert replace(CATALOG, superseded=None).superseded is None
