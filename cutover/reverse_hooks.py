"""The reverse direction's entry points, as the write switch and the demo call them.

``producers.reverse.setup`` is written by the capture lane of issue 14:
``prepare_green(settings, spec)`` creates green's publication and logical slot (the
slot must exist before green takes writes); ``drop_reverse(settings)`` drops them
once blue applied the reverse fence. Until that module is on this branch the calls
go through here, and a switch that needs them refuses with a clear message; tests
pass their own functions instead. ``verify_reverse(settings, domain)`` is the apply
lane's ``cutover.verify_reverse.verify_reverse`` (blue == inverse(green)).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from schemas.domain import Domain, ReverseSpec

PrepareGreen = Callable[[Settings, ReverseSpec], Any]
DropReverse = Callable[[Settings], Any]


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise BluegreenError(f"{name} is not installed (issue 14's reverse direction)") from exc


def _setup() -> Any:
    try:
        return importlib.import_module("producers.reverse.setup")
    except ModuleNotFoundError as exc:
        raise BluegreenError(
            "the reverse capture (producers.reverse.setup) is not installed: writes cannot "
            "move to green without it"
        ) from exc


def available() -> bool:
    """Whether the reverse capture is installed (the demo's write story needs it)."""
    try:
        _setup()
    except BluegreenError:
        return False
    return True


def prepare_green(settings: Settings, spec: ReverseSpec) -> Any:
    return _setup().prepare_green(settings, spec)


def drop_reverse(settings: Settings) -> Any:
    return _setup().drop_reverse(settings)


def verify_reverse(settings: Settings, domain: Domain) -> Any:
    """A VerifyReport of blue against inverse(green), after green's fence reached blue."""
    return _module("cutover.verify_reverse").verify_reverse(settings, domain)
