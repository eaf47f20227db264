"""A PostgreSQL cluster of the local stack: initdb once, start, stop by pid, health."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bluegreen.app.stack import processes
from bluegreen.core.errors import StackError

# blue is the source of logical decoding, and so is green once writes move there
# (issue 14: green's reverse slot); they get room for slots so tests and repair
# (temporary slots) never run out. Also passed at every start, so a cluster
# initialized before a setting was added picks it up at its next start.
_COMMON_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    "max_wal_size": "2GB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}
BLUE_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "40",
    "max_wal_senders": "40",
    "max_slot_wal_keep_size": "8GB",
}


@dataclass(frozen=True)
class Cluster:
    name: str
    data_dir: Path
    host: str
    port: int
    bin_dir: Path
    database: str
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    def _bin(self, tool: str) -> str:
        path = self.bin_dir / tool
        if not path.exists():
            raise StackError(
                f"PostgreSQL server binary {path} is missing; install it with "
                "`apt-get install -y postgresql-15` or set BLUEGREEN_STACK__PG_BIN_DIR"
            )
        return str(path)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb with trust auth on loopback only, then write our settings."""
        processes.give_to_service_user(self.data_dir.parent)
        processes.give_to_service_user(self.data_dir)
        processes.check_service_user_can_write(self.data_dir)
        processes.run(
            processes.as_service_user(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            what=f"initdb of the {self.name} cluster",
        )
        conf = {
            **_COMMON_SETTINGS,
            **self.settings,
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.data_dir}'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            handle.write("\n# written by bluegreen stack\n")
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        hba += "host replication all 127.0.0.1/32 trust\nhost replication all ::1/128 trust\n"
        (self.data_dir / "pg_hba.conf").write_text(hba)

    def pid(self) -> int | None:
        """The postmaster's pid from its pid file, if that process is alive."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if processes.pid_alive(pid) else None

    def start(self) -> int:
        if processes.port_in_use(self.host, self.port):
            raise StackError(
                f"port {self.host}:{self.port} for the {self.name} cluster is taken by another "
                "process; stop it or choose another port "
                f"(BLUEGREEN_STACK__{self.name.upper()}_PORT)"
            )
        processes.run(
            processes.as_service_user(
                [
                    self._bin("pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    # Address and port from the settings of this run, not the ones initdb saw.
                    "-o",
                    f"-p {self.port} -c listen_addresses={self.host}"
                    + "".join(f" -c {key}={value}" for key, value in self.settings.items()),
                    "-w",
                    "-t",
                    "60",
                ]
            ),
            what=f"starting the {self.name} cluster",
            log=self.log_file,
        )
        pid = self.pid()
        if pid is None:
            raise StackError(
                f"the {self.name} cluster did not stay up\n{processes.tail_lines(self.log_file)}"
            )
        return pid

    def ensure_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
                time.sleep(0.2)
        raise StackError(
            f"the {self.name} cluster does not accept connections on {self.host}:{self.port}\n"
            f"{processes.tail_lines(self.log_file)}"
        ) from last

    def healthy(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def stop(self, expected_pid: int | None) -> bool:
        """Fast shutdown of exactly the postmaster we started; False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        if expected_pid is not None and pid != expected_pid:
            raise StackError(
                f"the {self.name} cluster runs as pid {pid}, not the pid {expected_pid} this "
                "stack started; refusing to stop a process it did not start"
            )
        # SIGINT is PostgreSQL's "fast" shutdown: it rolls back open transactions
        # and checkpoints, so no committed data is lost.
        processes.stop_pid(pid, signal.SIGINT, timeout_s=60)
        return True
