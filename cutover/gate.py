"""A cutover gate's answer: its name, whether it passes, and the figure that says why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Gate:
    name: str
    ok: bool
    figure: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
