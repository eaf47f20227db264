"""The long-lived services: `bluegreen cdc` and `bluegreen consume`."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from bluegreen.app.cli.context import cli_context
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics, serve
from bluegreen.core.runtime import tune_for_throughput
from consumers.service import ConsumerService
from producers.cdc.service import CdcService

MetricsPort = Annotated[int, typer.Option(help="Port of /metrics (0: any free port, -1: off).")]


def cdc(ctx: typer.Context, metrics_port: MetricsPort = 9461) -> None:
    """Capture every committed blue change from the replication slot into Kafka.

    Runs until SIGTERM/SIGINT, then drains what is in flight and confirms it. On
    restart it resumes from the slot: nothing committed in blue is missed.

    When blue or Kafka goes away it reconnects with backoff and resumes from the
    slot; after cdc.reconnect_timeout_s (300 s) it exits non-zero with one line.
    """
    settings = cli_context(ctx).settings
    metrics = Metrics()
    port = None
    if metrics_port >= 0:
        port = serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    metrics.service_info.labels("cdc").set(1)
    service = CdcService(settings, cli_context(ctx).domain.source, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: service.request_stop())
    get_logger(service="cdc").info("starting", metrics_port=port)
    service.run()


def consume(ctx: typer.Context, metrics_port: MetricsPort = 9462) -> None:
    """Apply the change stream to green: decode, transform, validate, batch, apply, commit.

    Run as many as there are partitions to scale out (a consumer group). Stops
    cleanly on SIGTERM/SIGINT after applying and committing its batch.
    """
    settings = cli_context(ctx).settings
    metrics = Metrics()
    port = None
    if metrics_port >= 0:
        port = serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    metrics.service_info.labels("consume").set(1)
    tune_for_throughput()
    service = ConsumerService(settings, cli_context(ctx).domain, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: service.request_stop())
    get_logger(service="consume").info("starting", metrics_port=port)
    service.run()
