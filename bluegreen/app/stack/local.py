"""The local stack: blue, green and control PostgreSQL clusters and one Kafka broker.

`up` is idempotent (a running service is reported, not restarted), `down` stops
exactly the pids `up` recorded, `status` says what runs. Data lives in the state
folder and survives `down`/`up`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bluegreen.app.stack import processes
from bluegreen.app.stack.kafka_broker import KafkaBroker
from bluegreen.app.stack.postgres import BLUE_SETTINGS, Cluster
from bluegreen.core.config import StackSettings
from bluegreen.core.errors import StackError
from cutover import app_roles

CLUSTERS = ("blue", "green", "control")


@dataclass
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    rss_mb: float | None
    action: str = ""  # what `up` did: started, already running, ...
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.pids_file = self.state_dir / "pids.json"
        self.clusters = {name: self._cluster(name) for name in CLUSTERS}
        self.kafka = KafkaBroker(
            home=self.state_dir / "kafka",
            host=settings.host,
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            version=settings.kafka_version,
            heap_mb=settings.kafka_heap_mb,
            jar_cache_dir=settings.jar_cache_dir.expanduser(),
        )

    def _cluster(self, name: str) -> Cluster:
        port = getattr(self.settings, f"{name}_port")
        return Cluster(
            name=name,
            data_dir=self.state_dir / "pg" / name,
            host=self.settings.host,
            port=port,
            bin_dir=self.settings.pg_bin_dir,
            database=name,
            settings=BLUE_SETTINGS if name in ("blue", "green") else {},
        )

    # -- recorded pids -------------------------------------------------------------------------

    def _pids(self) -> dict[str, int]:
        try:
            data = json.loads(self.pids_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _record(self, name: str, pid: int | None) -> None:
        pids = self._pids()
        if pid is None:
            pids.pop(name, None)
        else:
            pids[name] = pid
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids, indent=2))
        tmp.replace(self.pids_file)

    # -- up ------------------------------------------------------------------------------------

    def up(self) -> list[ServiceStatus]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        report = [self._up_cluster(self.clusters[name]) for name in CLUSTERS]
        report.append(self._up_kafka())
        return report

    def _up_cluster(self, cluster: Cluster) -> ServiceStatus:
        started = time.monotonic()
        pid = cluster.pid()
        action = "already running"
        if pid is None:
            action = "started"
            if not cluster.initialized():
                cluster.init()
                action = "initialized and started"
            pid = cluster.start()
        self._record(cluster.name, pid)
        cluster.wait_healthy(self.settings.start_timeout_s)
        cluster.ensure_database()
        if cluster.name in ("blue", "green"):
            # The application's role (LOGIN, trust on loopback); its grants are given
            # where its tables are created (the demo, the tests, your deployment).
            with psycopg.connect(cluster.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                app_roles.ensure_role(conn)
        return ServiceStatus(
            name=cluster.name,
            address=cluster.dsn,
            pid=pid,
            running=True,
            healthy=True,
            rss_mb=processes.rss_mb(pid),
            action=action,
            seconds=time.monotonic() - started,
        )

    def _up_kafka(self) -> ServiceStatus:
        started = time.monotonic()
        broker = self.kafka
        pid = self._pids().get("kafka")
        action = "already running"
        if pid is None or not processes.pid_alive(pid) or not broker.owns(pid):
            cached = broker.jars_cached()
            broker.resolve_jars()
            broker.configure()
            if not broker.formatted():
                broker.format()
            pid = broker.start()
            self._record("kafka", pid)
            action = "started" if cached else "resolved jars and started"
        broker.wait_started(pid, self.settings.start_timeout_s, self._kafka_ready)
        return ServiceStatus(
            name="kafka",
            address=broker.bootstrap,
            pid=pid,
            running=True,
            healthy=True,
            rss_mb=processes.rss_mb(pid),
            action=action,
            seconds=time.monotonic() - started,
        )

    def _kafka_ready(self) -> bool:
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap, "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=1.0).brokers)
        except KafkaException:
            return False

    # -- down ----------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop what `up` started, Kafka first (clients may still write to PostgreSQL)."""
        stopped = []
        pids = self._pids()
        kafka_pid = pids.get("kafka")
        if kafka_pid is not None and processes.pid_alive(kafka_pid) and self.kafka.owns(kafka_pid):
            self.kafka.stop(kafka_pid)
            stopped.append("kafka")
        self._record("kafka", None)
        for name in CLUSTERS:
            if self.clusters[name].stop(pids.get(name)):
                stopped.append(name)
            self._record(name, None)
        return stopped

    # -- status --------------------------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        pids = self._pids()
        report = []
        for name in CLUSTERS:
            cluster = self.clusters[name]
            pid = cluster.pid()
            report.append(
                ServiceStatus(
                    name=name,
                    address=cluster.dsn,
                    pid=pid,
                    running=pid is not None,
                    healthy=pid is not None and cluster.healthy(),
                    rss_mb=processes.rss_mb(pid) if pid else None,
                )
            )
        kafka_pid = pids.get("kafka")
        alive = (
            kafka_pid is not None and processes.pid_alive(kafka_pid) and self.kafka.owns(kafka_pid)
        )
        report.append(
            ServiceStatus(
                name="kafka",
                address=self.kafka.bootstrap,
                pid=kafka_pid if alive else None,
                running=alive,
                healthy=alive and self._kafka_ready(),
                rss_mb=processes.rss_mb(kafka_pid) if alive and kafka_pid else None,
            )
        )
        return report

    def require_running(self) -> None:
        down = [s.name for s in self.status() if not s.healthy]
        if down:
            raise StackError(
                f"stack services not running: {', '.join(down)}; run `bluegreen stack up`"
            )


def state_paths(state_dir: Path) -> dict[str, Path]:
    """Log files an operator looks at when a service misbehaves."""
    root = state_dir.resolve()
    paths = {name: root / "pg" / f"{name}.log" for name in CLUSTERS}
    paths["kafka"] = root / "kafka" / "server.log"
    return paths
