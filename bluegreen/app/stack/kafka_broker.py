"""A single-node Apache Kafka broker in KRaft mode, from Apache Kafka's own jars.

The jars come from Maven Central through Maven (the pom in ``files/``) into a
cache folder outside git; the broker runs as a plain Java process whose pid the
stack records, with a small heap.
"""

from __future__ import annotations

import base64
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bluegreen.app.stack import processes
from bluegreen.core.errors import StackError

_COMPLETE = ".complete"


@dataclass(frozen=True)
class KafkaBroker:
    home: Path  # state folder of this broker: config, data, logs
    host: str
    port: int
    controller_port: int
    version: str
    heap_mb: int
    jar_cache_dir: Path

    @property
    def lib_dir(self) -> Path:
        return self.jar_cache_dir / self.version / "lib"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.home / "stdout.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def jars_cached(self) -> bool:
        return (self.lib_dir / _COMPLETE).exists()

    def resolve_jars(self) -> None:
        """Resolve the broker classpath with Maven (once; later calls find the cache)."""
        if self.jars_cached():
            return
        for tool, package in (("mvn", "maven"), ("java", "openjdk-17-jre-headless")):
            if shutil.which(tool) is None:
                raise StackError(
                    f"`{tool}` is not installed; the local Kafka broker needs it. "
                    f"Install it with `apt-get install -y {package}`"
                )
        pom = resources.files("bluegreen.app.stack").joinpath("files/pom.xml")
        staging = self.lib_dir.with_name("lib.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with resources.as_file(pom) as pom_path:
            processes.run(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    f"-Dkafka.version={self.version}",
                ],
                what=f"resolving Apache Kafka {self.version} jars from Maven Central",
                timeout=900,
            )
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise StackError(f"Maven finished but no kafka_2.13 jar is in {staging}")
        (staging / _COMPLETE).write_text(self.version)
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        staging.rename(self.lib_dir)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dbluegreen.kafka.log={self.log_file}",
            "-cp",
            f"{self.lib_dir}/*",
            main,
            *args,
        ]

    def configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log4j = resources.files("bluegreen.app.stack").joinpath("files/log4j2.properties")
        (self.home / "log4j2.properties").write_text(log4j.read_text())
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "log.segment.bytes": "268435456",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _kafka_cluster_id()
        processes.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
                "-g",
            ),
            what="formatting the Kafka storage",
        )

    def start(self) -> int:
        for port in (self.port, self.controller_port):
            if processes.port_in_use(self.host, port):
                raise StackError(
                    f"port {self.host}:{port} for Kafka is taken by another process; stop it "
                    "or choose other ports (BLUEGREEN_STACK__KAFKA_PORT, "
                    "BLUEGREEN_STACK__KAFKA_CONTROLLER_PORT)"
                )
        heap = [f"-Xms{max(128, self.heap_mb // 2)}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC"]
        argv = self._java("kafka.Kafka", str(self.config_file))
        argv[1:1] = heap
        # A shell starts the broker in the background and exits at once, printing
        # its pid: the broker is then nobody's child, so it outlives the CLI and
        # init reaps it. The pid is what `down` stops.
        launcher = (
            f"{shlex.join(argv)} </dev/null >>{shlex.quote(str(self.stdout_file))} 2>&1 & echo $!"
        )
        done = subprocess.run(
            ["sh", "-c", launcher],
            capture_output=True,
            text=True,
            cwd=self.home,
            start_new_session=True,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            raise StackError(f"could not launch the Kafka broker: {done.stderr.strip()}")
        return int(done.stdout.strip())

    def owns(self, pid: int) -> bool:
        """True when pid is this broker (java running kafka.Kafka with our config)."""
        argv = processes.cmdline(pid)
        return "kafka.Kafka" in argv and str(self.config_file) in argv

    def failure_report(self) -> str:
        return (
            f"--- {self.log_file} ---\n{processes.tail_lines(self.log_file)}\n"
            f"--- {self.stdout_file} ---\n{processes.tail_lines(self.stdout_file, 20)}"
        )

    def stop(self, pid: int) -> None:
        if not processes.pid_alive(pid):
            return
        if not self.owns(pid):
            raise StackError(f"pid {pid} is not this stack's Kafka broker; refusing to stop it")
        processes.stop_pid(pid, signal.SIGTERM, timeout_s=60)

    def wait_started(self, pid: int, timeout_s: float, ready: Callable[[], bool]) -> None:
        """Poll `ready()` (a metadata request) until it succeeds or the broker dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not processes.pid_alive(pid):
                raise StackError(f"the Kafka broker exited during start\n{self.failure_report()}")
            if ready():
                return
            time.sleep(0.3)
        raise StackError(
            f"the Kafka broker did not answer within {timeout_s:.0f}s\n{self.failure_report()}"
        )


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
