"""`bluegreen reverse-apply`: green's writes back into blue (issue 14)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from bluegreen.app.cli.context import cli_context
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics, serve
from consumers.reverse.service import ReverseApplyService

MetricsPort = Annotated[int, typer.Option(help="Port of /metrics (0: any free port, -1: off).")]


def reverse_apply(ctx: typer.Context, metrics_port: MetricsPort = 9466) -> None:
    """Apply green's changes to blue through the inverse transform, once writes are on green.

    Consumes the reverse topic (kafka.reverse_topic) as a member of the
    reverse_apply.group_id consumer group; per batch, in one blue transaction, reads
    each touched aggregate's current state from green and writes its inverse into blue,
    under a replication origin (bluegreen_reverse_N) blue's forward capture skips.
    Stops cleanly on SIGTERM/SIGINT; rides through blue, green or Kafka restarts for
    reverse_apply.reconnect_timeout_s (300 s), then exits non-zero with one line.
    """
    settings = cli_context(ctx).settings
    metrics = Metrics()
    port = None
    if metrics_port >= 0:
        port = serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    metrics.service_info.labels("reverse-apply").set(1)
    service = ReverseApplyService(settings, cli_context(ctx).domain, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: service.request_stop())
    get_logger(service="reverse-apply").info("starting", metrics_port=port)
    service.run()
