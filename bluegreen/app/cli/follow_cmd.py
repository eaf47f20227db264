"""`bluegreen verify --follow`: the continuous verifier as a long-lived service."""

from __future__ import annotations

import signal

from bluegreen.core.config import Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics, serve
from cutover.follow import Follower
from schemas.domain import Domain


def follow(settings: Settings, domain: Domain, *, interval_s: float, metrics_port: int) -> None:
    metrics = Metrics()
    port = None
    if metrics_port >= 0:
        port = serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    metrics.service_info.labels("verify-follow").set(1)
    follower = Follower(settings, domain, metrics.verification, interval_s=interval_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: follower.stop.set())
    get_logger(service="verify-follow").info("starting", metrics_port=port, interval_s=interval_s)
    with follower:
        follower.run()
    get_logger(service="verify-follow").info("stopped")
