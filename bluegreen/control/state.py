"""Kept only for ``consumers.gauges`` (``state.phase``, ``state.Phase``, ``state.router``)
until the consumer's split lands and imports ``bluegreen.control`` itself; new code
uses ``bluegreen.control``."""

from bluegreen.control.migration import Phase, phase
from bluegreen.control.read_router import router

__all__ = ["Phase", "phase", "router"]
