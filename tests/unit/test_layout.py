"""The house rules a reader relies on: small modules, small classes, packages that
say what they hold.

The floors themselves (every import runs down, the engine knows no domain) are held
by import-linter in `make lint` (pyproject.toml, [tool.importlinter]).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bluegreen", "schemas", "producers", "consumers", "cutover")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250

SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_is_over_400_lines() -> None:
    assert len(SOURCES) > 50
    long = [_name(p) for p in SOURCES if p.read_text().count("\n") > MAX_MODULE_LINES]
    assert long == [], "split these along a seam"


def test_no_class_is_over_250_lines() -> None:
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long.append(f"{_name(path)}: {node.name} ({lines} lines)")
    assert long == []


def test_every_package_docstring_says_what_the_package_is_for() -> None:
    inits = [p for p in SOURCES if p.name == "__init__.py"]
    assert len(inits) > 10
    mute = [
        _name(p)
        for p in inits
        if len((ast.get_docstring(ast.parse(p.read_text())) or "").split()) < 6
    ]
    assert mute == []
