import io
import json

from bluegreen.core import logs
from bluegreen.core.config import LogSettings


def test_redact_masks_url_and_keyword_passwords() -> None:
    assert logs.redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert logs.redact("host=db password=s3cret user=app") == "host=db password=*** user=app"
    assert logs.redact("nothing to hide") == "nothing to hide"


def test_json_logs_carry_fields_and_never_secrets() -> None:
    out = io.StringIO()
    logs.configure(LogSettings(format="json"), stream=out)
    log = logs.get_logger(service="consume", partition=3)
    log.info("applied", dsn="postgresql://u:pw@h/db", note="via postgresql://u:pw2@h/db")
    record = json.loads(out.getvalue().strip().splitlines()[-1])
    assert record["service"] == "consume"
    assert record["partition"] == 3
    assert record["event"] == "applied"
    assert record["dsn"] == "***"
    assert "pw2" not in record["note"]
