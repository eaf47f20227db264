import copy
import json
import subprocess
import sys
from pathlib import Path

from schemas.codec import ENVELOPE_FILE, ROW_FILE, build_version, load_versions
from schemas.compat import check_evolution, resolve

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def evolved(change) -> tuple[dict, dict]:
    row = json.loads((AVRO / "v1" / ROW_FILE).read_text())
    envelope = json.loads((AVRO / "v1" / ENVELOPE_FILE).read_text())
    row, envelope = copy.deepcopy(row), copy.deepcopy(envelope)
    change(row, envelope)
    return row, envelope


def field(row: dict, name: str) -> dict:
    return next(f for f in row["fields"] if f["name"] == name)


def problems_of(change) -> list[str]:
    v1 = load_versions()[0]
    return check_evolution([v1, build_version(2, *evolved(change))])


def test_kept_versions_are_compatible() -> None:
    assert check_evolution(load_versions()) == []


def test_optional_field_with_default_is_compatible_both_ways() -> None:
    def add(row, _):
        row["fields"].append({"name": "barcode", "type": ["null", "string"], "default": None})

    assert problems_of(add) == []


def test_new_field_without_default_breaks_backward_and_names_it() -> None:
    def add(row, _):
        row["fields"].append({"name": "barcode", "type": "string"})

    problems = problems_of(add)
    assert len(problems) == 2  # before and after both carry the row
    assert all(
        "backward" in p and ("after.barcode" in p or "before.barcode" in p) for p in problems
    )


def test_removed_field_without_default_breaks_forward() -> None:
    def drop(row, _):
        row["fields"] = [f for f in row["fields"] if f["name"] != "currency"]

    problems = problems_of(drop)
    assert problems and all("forward" in p and "currency" in p for p in problems)


def test_widening_is_backward_only() -> None:
    def widen(_, envelope):
        source = field(envelope, "source")["type"]
        field(source, "seq")["type"] = "long"

    problems = problems_of(widen)
    assert problems == [
        "v1 readers cannot read v2 data (forward): "
        "source.seq: writer type long cannot be read as int"
    ]


def test_enum_symbol_needs_the_reader_default() -> None:
    def add_symbol(_, envelope):
        field(envelope, "op")["type"]["symbols"].append("x")

    assert problems_of(add_symbol) == []  # v1's enum has a default: old readers map x to it

    def no_default(_, envelope):
        del field(envelope, "op")["type"]["default"]

    writer = build_version(2, *evolved(add_symbol))
    reader = build_version(3, *evolved(no_default))
    assert resolve(writer.source, reader.source) == [
        "op: enum Operation lacks symbols ['x'] and has no default"
    ]


def test_decimal_scale_change_is_refused() -> None:
    def rescale(row, _):
        field(row, "price")["type"]["scale"] = 3

    problems = problems_of(rescale)
    assert any("decimal(12,2) cannot be read as decimal(12,3)" in p for p in problems)


def test_cli_check_refuses_a_breaking_candidate(tmp_path: Path) -> None:
    row, envelope = evolved(lambda r, _: r["fields"].append({"name": "ean", "type": "long"}))
    candidate = tmp_path / "v2"
    candidate.mkdir()
    (candidate / ROW_FILE).write_text(json.dumps(row))
    (candidate / ENVELOPE_FILE).write_text(json.dumps(envelope))
    done = subprocess.run(
        [sys.executable, "-m", "bluegreen", "schemas", "check", str(candidate)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "after.ean" in done.stderr and "no default" in done.stderr

    ok = subprocess.run(
        [sys.executable, "-m", "bluegreen", "schemas", "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "compatible" in ok.stdout
