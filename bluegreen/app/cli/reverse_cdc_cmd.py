"""`bluegreen reverse-cdc`: green's capture, for while writes are on green."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from bluegreen.app.cli.context import cli_context
from bluegreen.core.errors import ConfigError
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics, serve
from producers.reverse.service import ReverseCdcService

MetricsPort = Annotated[int, typer.Option(help="Port of /metrics (0: any free port, -1: off).")]


def reverse_cdc(ctx: typer.Context, metrics_port: MetricsPort = 9464) -> None:
    """Capture every committed green change into the reverse topic (green -> blue).

    Long-lived. While green's slot `bluegreen_reverse` does not exist (writes
    are on blue) it waits, polling quietly. `cutover --writes` creates the slot;
    from then on every green transaction becomes one event per changed
    aggregate, keyed by its key, and the slot is confirmed only after Kafka
    acknowledged it. When `rollback --writes` drops the slot it waits again.

    When green or Kafka goes away it reconnects with backoff and resumes from
    the slot; after cdc.reconnect_timeout_s (300 s) it exits non-zero.
    """
    context = cli_context(ctx)
    settings = context.settings
    spec = context.domain.reverse
    if spec is None:
        raise ConfigError(f"domain {settings.domain} does not move writes to green (no reverse)")
    metrics = Metrics()
    port = None
    if metrics_port >= 0:
        port = serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    metrics.service_info.labels("reverse-cdc").set(1)
    service = ReverseCdcService(settings, spec, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: service.request_stop())
    get_logger(service="reverse-cdc").info(
        "starting", metrics_port=port, topic=settings.kafka.reverse_topic
    )
    service.run()
