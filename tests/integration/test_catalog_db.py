import pytest

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from consumers.apply import create_green
from schemas.catalog import CATALOG
from schemas.catalog.ddl import create_blue
from schemas.catalog.seed_load import load_seed

pytestmark = pytest.mark.integration


class Counting:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def advance(self, n: int) -> None:
        self.seen.append(n)

    def note(self, text: str) -> None:
        pass


def test_seed_loads_blue_with_toasted_descriptions(settings: Settings) -> None:
    counting = Counting()
    seen = counting.seen
    report = load_seed(settings.blue_dsn, 12_000, 42, replace=False, progress=counting)
    assert report.rows == 12_000 == sum(seen)
    assert report.toast_bytes > 1_000_000
    with db.connect(settings.blue_dsn) as conn:
        unique = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conname = 'legacy_product_sku_channel_key'"
        ).fetchone()
        assert unique == (1,)  # rebuilt after the bulk load
        next_id = conn.execute(
            "INSERT INTO legacy_product (sku, channel, product_type, name, price, currency) "
            "VALUES ('NEW-1', 'US', 'Boot US', 'New', 1, 'USD') RETURNING id"
        ).fetchone()
        assert next_id == (12_001,)


def test_seed_refuses_a_filled_table_unless_replace(settings: Settings) -> None:
    load_seed(settings.blue_dsn, 100, 1, replace=False, progress=Counting())
    with pytest.raises(BluegreenError, match="--replace"):
        load_seed(settings.blue_dsn, 100, 1, replace=False, progress=Counting())
    report = load_seed(settings.blue_dsn, 50, 1, replace=True, progress=Counting())
    assert report.rows == 50


def test_green_tables_are_created_and_constrained(settings: Settings) -> None:
    create_green(settings.green_dsn, CATALOG)
    create_green(settings.green_dsn, CATALOG)  # idempotent
    create_blue(settings.blue_dsn)
    with db.connect(settings.green_dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname IN ('catalog', 'sync')"
            )
        }
        assert tables == {
            "catalog.product",
            "catalog.channel_listing",
            "sync.listing_record",
            "sync.apply_position",
            "sync.verify_queue",  # the keys each batch touched, for `verify --follow`
        }
        with pytest.raises(Exception, match="listing_record_live_check"):
            conn.execute(
                "INSERT INTO sync.listing_record "
                "(sku, channel, deleted, src_lsn, src_seq, kafka_partition) "
                "VALUES ('A', 'US', false, 1, 1, 0)"
            )
