"""A second, tiny domain: proof that the engine runs without the catalog.

Blue ``public.tiny(id bigint, name text)`` becomes green ``tiny.item(id, label)``
with ``label = name.upper()``; a blank name cannot be mapped. Like the catalog it
keeps versioned records (``tiny.item_record``, tombstones included) behind a
version guard, and derives the public rows from them in the same statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db
from bluegreen.core.errors import TransformError
from schemas.domain import ApplySql, Domain, Expected, GreenTable, VerifySpec
from schemas.envelope import Op, Version
from schemas.rowvalues import Column, Kind
from schemas.source import SourceSpec
from schemas.stage import StageColumn, StageTable

SOURCE = SourceSpec(
    schema="public",
    table="tiny",
    primary_key="id",
    columns=(Column("id", Kind.LONG), Column("name", Kind.STRING)),
    aggregate_key="id",
    natural_key=("id",),
    avro=Path(__file__).resolve().parent / "tiny_avro",
)

BLUE_DDL = "CREATE TABLE IF NOT EXISTS public.tiny (id bigint PRIMARY KEY, name text NOT NULL)"


@dataclass(frozen=True)
class Upsert:
    id: int
    label: str
    version: Version


@dataclass(frozen=True)
class Delete:
    id: int
    version: Version


def label_of(row: Mapping[str, Any]) -> str:
    name = str(row["name"]).strip()
    if not name:
        raise TransformError(f"public.tiny id={row['id']}: empty name")
    return name.upper()


def transform(event: Mapping[str, Any]) -> list[Upsert | Delete]:
    version = Version(event["source"]["lsn"], event["source"]["seq"])
    op = event["op"]
    if op in (Op.READ, Op.CREATE, Op.UPDATE):
        after = event["after"]
        return [Upsert(int(after["id"]), label_of(after), version)]
    if op == Op.DELETE:
        image = event.get("before") or event["key"]
        return [Delete(int(image["id"]), version)]
    return []


STAGE = StageTable(
    name="stage_tiny",
    noun="item",
    key=("id",),
    deleted="deleted",
    columns=(
        StageColumn("id", "bigint"),
        StageColumn("deleted", "boolean"),
        StageColumn("label", "text", payload=True, min_length=1),
        StageColumn("src_lsn", "bigint", ge=0),
        StageColumn("src_seq", "integer", ge=0),
        StageColumn("kafka_partition", "integer", ge=0),
    ),
)


def stage_row(op: Upsert | Delete, partition: int) -> tuple[Any, ...]:
    label = op.label if isinstance(op, Upsert) else None
    return (op.id, isinstance(op, Delete), label, op.version.lsn, op.version.seq, partition)


_GREEN_DDL = """
SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'));
CREATE SCHEMA IF NOT EXISTS tiny;
CREATE TABLE IF NOT EXISTS tiny.item_record (
    id bigint PRIMARY KEY, deleted boolean NOT NULL, label text,
    src_lsn bigint NOT NULL, src_seq integer NOT NULL, kafka_partition integer NOT NULL
);
CREATE TABLE IF NOT EXISTS tiny.item (
    id bigint PRIMARY KEY, label text NOT NULL, src_lsn bigint NOT NULL, src_seq integer NOT NULL
);
"""


def create_green(dsn: SecretStr) -> None:
    with db.connect(dsn) as conn:
        conn.execute(_GREEN_DDL)
        conn.commit()


# The version guard into the records, the changed ones on into tiny.item.
_APPLY = sql.SQL("""
WITH winners AS (
    SELECT DISTINCT ON (id) * FROM {stage} ORDER BY id, src_lsn DESC, src_seq DESC
), changed AS (
    INSERT INTO tiny.item_record AS r (id, deleted, label, src_lsn, src_seq, kafka_partition)
    SELECT id, deleted, label, src_lsn, src_seq, kafka_partition FROM winners
    ON CONFLICT (id) DO UPDATE SET deleted = EXCLUDED.deleted, label = EXCLUDED.label,
        src_lsn = EXCLUDED.src_lsn, src_seq = EXCLUDED.src_seq,
        kafka_partition = EXCLUDED.kafka_partition
    WHERE (r.src_lsn, r.src_seq) < (EXCLUDED.src_lsn, EXCLUDED.src_seq)
    RETURNING r.id, r.deleted, r.label, r.src_lsn, r.src_seq
), gone AS (
    DELETE FROM tiny.item i WHERE i.id IN (SELECT id FROM changed WHERE deleted)
)
INSERT INTO tiny.item AS i (id, label, src_lsn, src_seq)
SELECT id, label, src_lsn, src_seq FROM changed WHERE NOT deleted
ON CONFLICT (id) DO UPDATE SET label = EXCLUDED.label, src_lsn = EXCLUDED.src_lsn,
    src_seq = EXCLUDED.src_seq
""").format(stage=sql.Identifier(STAGE.name))

APPLY = ApplySql(
    setup=(),
    apply=(_APPLY,),
    clear=sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGE.name)),
    truncate=sql.SQL(
        "UPDATE tiny.item_record SET deleted = true, label = NULL, src_lsn = %(lsn)s, "
        "src_seq = %(seq)s WHERE kafka_partition = %(partition)s "
        "AND (src_lsn, src_seq) < (%(lsn)s, %(seq)s)"
    ),
    after_truncate=(
        sql.SQL("DELETE FROM tiny.item i USING tiny.item_record r WHERE r.id = i.id AND r.deleted"),
    ),
)

ITEMS = GreenTable("item", "tiny", "item", ("id", "label"))


def expected(rows: list[dict[str, Any]], version: Version) -> Expected:
    found: dict[Any, tuple[Any, ...]] = {}
    unmappable = []
    for row in rows:
        try:
            found[None] = (row["id"], label_of(row))
        except TransformError as exc:
            unmappable.append(str(exc))
    return Expected({ITEMS.name: found}, unmappable)


def repair_keys(item_id: Any) -> list[tuple[Any, ...]]:
    return [(item_id,)]


TINY = Domain(
    ref="tests.support.tiny:TINY",
    source=SOURCE,
    transform=transform,
    stage_row=stage_row,
    stage=STAGE,
    create_green=create_green,
    apply=APPLY,
    verify=VerifySpec(
        tables=(ITEMS,), expected=expected, records=("tiny", "item_record"), repair_keys=repair_keys
    ),
)
