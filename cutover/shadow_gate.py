"""The cutover gate `shadow reads matched`: green answered the application's shadowed
reads as blue does, through the transform.

The rule, over the last ``shadow.gate_window_minutes`` (M) minutes of every read
router's counts in the control database:

- any mismatch fails the gate, whatever else is configured: it is a read green
  answered differently, after the rechecks ruled out replication lag;
- ``shadow.gate_min_compared`` (N) > 0: shadowed reads are required, and at least N
  comparisons must have been made in the window;
- N = 0 (the default): shadowed reads are not required; the gate passes, says so, and
  still shows whatever figures the routers recorded.
"""

from __future__ import annotations

from bluegreen import control
from bluegreen.control import ShadowCounts, ShadowWindow
from bluegreen.core import db
from bluegreen.core.config import Settings, ShadowSettings
from cutover.gates import Gate

NAME = "shadow reads matched"


def judge(window: ShadowWindow | None, options: ShadowSettings) -> Gate:
    """The gate's verdict on the window's counts (None: no router ever recorded any)."""
    minutes, needed = options.gate_window_minutes, options.gate_min_compared
    counts = window.counts if window is not None else ShadowCounts()
    clients = window.clients if window is not None else 0
    figures = (
        f"{counts.compared:,} compared, {counts.mismatched:,} mismatched, "
        f"{counts.dropped:,} dropped in the last {minutes} min ({clients} routers)"
    )
    if counts.mismatched:
        return Gate(NAME, False, f"{figures}; the routers logged each as 'shadow read mismatch'")
    if needed == 0:
        return Gate(NAME, True, f"not required (shadow.gate_min_compared = 0); {figures}")
    if counts.compared < needed:
        return Gate(NAME, False, f"{counts.compared:,}/{needed:,} comparisons needed; {figures}")
    return Gate(NAME, True, figures)


def window(settings: Settings) -> ShadowWindow | None:
    with db.connect(settings.control_dsn, autocommit=True) as conn:
        return control.shadow_window(conn, settings.shadow.gate_window_minutes)


def shadow_reads_matched(settings: Settings) -> Gate:
    return judge(window(settings), settings.shadow)
