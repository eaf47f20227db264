"""The one configuration model, built once at the CLI edge and frozen.

Sources, strongest first: values passed by the CLI, environment variables
(prefix ``BLUEGREEN_``, nested with ``__``, e.g. ``BLUEGREEN_KAFKA__TOPIC``),
an optional TOML file (``--config`` or ``BLUEGREEN_CONFIG``), then defaults.
Library code receives a ``Settings`` object and never reads ``os.environ``.

Secrets (DSNs, Kafka passwords) are ``SecretStr``: their repr is masked, so
they cannot leak through logs, tracebacks or ``--help``.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bluegreen.core.errors import ConfigError

ENV_PREFIX = "BLUEGREEN_"
_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "bluegreen_config_file", default=None
)

# librdkafka settings that would break the delivery guarantees if overridden.
_REFUSED_KAFKA_EXTRA = {
    "enable.auto.commit": "offsets are committed only after green committed the batch",
    "enable.auto.offset.store": "offsets are stored only after green committed the batch",
    "enable.idempotence": "producers must be idempotent to keep per-key order on retries",
    "acks": "producers need acks=all so an acknowledged message survives a broker failure",
    "partitioner": "every producer must use the same partitioner so one key has one partition",
}

_BOOTSTRAP = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}(,[A-Za-z0-9_.\-\[\]:]+:\d{1,5})*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    # Empty: the local stack's broker (filled in by Settings from stack.kafka_port).
    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    # Any other librdkafka setting, passed through as is (see _REFUSED_KAFKA_EXTRA).
    extra: dict[str, str] = Field(default_factory=dict)
    topic: str = "bluegreen.catalog.changes"
    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=16)
    dlq_topic: str = ""
    # Green's changes back to blue once writes are on green (default: <topic>.reverse).
    reverse_topic: str = ""

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.bootstrap_servers and not _BOOTSTRAP.match(self.bootstrap_servers):
            raise ValueError(
                "bootstrap_servers must be host:port[,host:port...], "
                f"got {self.bootstrap_servers!r}"
            )
        for key in self.extra:
            if key in _REFUSED_KAFKA_EXTRA:
                raise ValueError(f"extra.{key} cannot be overridden: {_REFUSED_KAFKA_EXTRA[key]}")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL"):
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if not self.dlq_topic:
            object.__setattr__(self, "dlq_topic", f"{self.topic}.dlq")
        if not self.reverse_topic:
            object.__setattr__(self, "reverse_topic", f"{self.topic}.reverse")
        return self

    def client_config(self) -> dict[str, str]:
        """librdkafka settings common to every client; the only place secrets are revealed."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        optional: dict[str, str | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": _path(self.ssl_ca_location),
            "ssl.certificate.location": _path(self.ssl_certificate_location),
            "ssl.key.location": _path(self.ssl_key_location),
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.extra)
        return conf


class StackSettings(_Frozen):
    """Where and how `bluegreen stack` runs the local services.

    The default ports clash neither with a system PostgreSQL (5432) nor with the
    kernel's ephemeral port range (32768-60999), where a client socket could hold the
    port for a moment and make a server's bind fail.
    """

    host: str = "127.0.0.1"
    state_dir: Path = Path(".bluegreen")
    pg_bin_dir: Path = Path("/usr/lib/postgresql/15/bin")
    blue_port: int = Field(default=15432, ge=1024, le=65535)
    green_port: int = Field(default=15433, ge=1024, le=65535)
    control_port: int = Field(default=15434, ge=1024, le=65535)
    kafka_port: int = Field(default=19092, ge=1024, le=65535)
    kafka_controller_port: int = Field(default=19093, ge=1024, le=65535)
    kafka_version: str = "4.4.0"
    kafka_heap_mb: int = Field(default=512, ge=128)
    jar_cache_dir: Path = Path.home() / ".cache" / "bluegreen" / "kafka"
    start_timeout_s: float = Field(default=90.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> StackSettings:
        if self.host not in {"127.0.0.1", "::1", "localhost"}:
            raise ValueError(f"host must be a loopback address, got {self.host!r}")
        ports = [
            self.blue_port,
            self.green_port,
            self.control_port,
            self.kafka_port,
            self.kafka_controller_port,
        ]
        if len(set(ports)) != len(ports):
            raise ValueError(f"stack ports must be distinct, got {ports}")
        return self


class SnapshotSettings(_Frozen):
    """Bulk snapshot: task size, retries, liveness."""

    chunk_size: int = Field(default=10_000, ge=1)
    workers: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    max_inflight_tasks: int = Field(default=3, ge=1)
    # A worker re-takes its snapshot after this long, so blue's vacuum is not held back.
    max_snapshot_age_s: float = Field(default=300.0, gt=0)
    slot_create_timeout_s: float = Field(default=120.0, gt=0)
    # How long a worker (and the snapshot parent) retries blue, control or Kafka before it
    # stops with one line naming the dependency.
    reconnect_timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SnapshotSettings:
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must exceed twice heartbeat_interval_s")
        return self


class CdcSettings(_Frozen):
    """Log-based capture from blue: slot, publication, heartbeats, health."""

    slot: str = Field(default="bluegreen_slot", pattern=r"^[a-z0-9_]{1,63}$")
    publication: str = Field(default="bluegreen_pub", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    status_interval_s: float = Field(default=1.0, gt=0)
    retained_wal_warning_bytes: int = Field(default=1 << 30, ge=0)
    # How long the service keeps reconnecting to blue or Kafka before it exits non-zero.
    reconnect_timeout_s: float = Field(default=300.0, gt=0)


class ConsumerSettings(_Frozen):
    """The apply service: batching, the dead-letter limit, retries against green."""

    group_id: str = "bluegreen-apply"
    batch_max_messages: int = Field(default=5_000, ge=1)
    batch_max_wait_s: float = Field(default=0.2, gt=0)
    # The DLQ limit: stop when more than this share of the last `dlq_window` messages,
    # or this many in a row, went to the dead-letter topic.
    dlq_max_ratio: float = Field(default=0.5, gt=0, le=1)
    dlq_window: int = Field(default=1_000, ge=1)
    dlq_max_consecutive: int = Field(default=200, ge=1)
    retry_backoff_base_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=15.0, gt=0)
    lag_interval_s: float = Field(default=2.0, gt=0)
    # How long the service keeps reconnecting to green or Kafka before it exits non-zero.
    reconnect_timeout_s: float = Field(default=300.0, gt=0)


class ReverseApplySettings(_Frozen):
    """The reverse applier (green -> blue once writes are on green): batching, origins."""

    group_id: str = "bluegreen-reverse-apply"
    batch_max_messages: int = Field(default=1_000, ge=1)
    batch_max_wait_s: float = Field(default=0.05, gt=0)
    # Replication origins bluegreen_reverse_1..N: one per running applier process.
    origins: int = Field(default=16, ge=1, le=1000)
    lag_interval_s: float = Field(default=2.0, gt=0)
    # How long the service keeps reconnecting to blue, green or Kafka before it exits.
    reconnect_timeout_s: float = Field(default=300.0, gt=0)


class ShadowSettings(_Frozen):
    """Shadowed reads (``cutover.shadow``) and their cutover gate (``cutover.shadow_gate``)."""

    # Share of keyed reads (TrafficRouter.read) mirrored to the other color; 0: off.
    ratio: float = Field(default=0.0, ge=0, le=1)
    # Reads waiting for the comparer; a read finding it full is not shadowed (counted).
    queue_size: int = Field(default=1_000, ge=1, le=100_000)
    # Mismatch log lines name the table, the key and the fields, not their values.
    mask_values: bool = False
    # A difference is read again on both colors this many times, recheck_delay_s apart,
    # before it counts as a mismatch: replication lag alone must not count.
    recheck_attempts: int = Field(default=3, ge=0, le=10)
    recheck_delay_s: float = Field(default=1.0, ge=0, le=60)
    # How often a router writes its counts to the control database.
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    # The gate "shadow reads matched": no mismatch in the last window, and at least this
    # many comparisons (0: shadowed reads are not required).
    gate_min_compared: int = Field(default=0, ge=0)
    gate_window_minutes: int = Field(default=10, ge=1, le=1_440)


class MetricsSettings(_Frozen):
    """Where a service exposes /metrics; each service command may override the port."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)  # None: off; 0: any free port


class LogSettings(_Frozen):
    format: Literal["console", "json"] = "console"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    blue_dsn: SecretStr = SecretStr("")
    green_dsn: SecretStr = SecretStr("")
    control_dsn: SecretStr = SecretStr("")
    kafka: KafkaSettings = KafkaSettings()
    stack: StackSettings = StackSettings()
    snapshot: SnapshotSettings = SnapshotSettings()
    cdc: CdcSettings = CdcSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    reverse_apply: ReverseApplySettings = ReverseApplySettings()
    shadow: ShadowSettings = ShadowSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    # What is migrated: "package.module:NAME" of a schemas.domain.Domain, imported by
    # the faces (the engine receives the object). Default: the demo catalog.
    domain: str = Field(default="schemas.catalog:CATALOG", pattern=r"^[\w.]+:\w+$")

    @model_validator(mode="after")
    def _default_to_local_stack(self) -> Settings:
        """Unset DSNs and Kafka bootstrap servers point at the local stack."""
        stack = self.stack
        if not self.kafka.bootstrap_servers:
            local = f"{stack.host}:{stack.kafka_port}"
            object.__setattr__(
                self, "kafka", self.kafka.model_copy(update={"bootstrap_servers": local})
            )
        for name, port, db in (
            ("blue_dsn", stack.blue_port, "blue"),
            ("green_dsn", stack.green_port, "green"),
            ("control_dsn", stack.control_port, "control"),
        ):
            value: SecretStr = getattr(self, name)
            if not value.get_secret_value():
                local = f"postgresql://postgres@{stack.host}:{port}/{db}"
                object.__setattr__(self, name, SecretStr(local))
            elif not value.get_secret_value().startswith(("postgresql://", "postgres://")):
                raise ValueError(f"{name} must be a postgresql:// URL")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the frozen settings, or raise ConfigError naming every bad setting."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist or is not a file")
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    finally:
        _CONFIG_FILE.reset(token)


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        env = ENV_PREFIX + "__".join(path).upper() if path else "(settings)"
        dotted = ".".join(path) or "(settings)"
        # Never echo the offending input: it may be a secret.
        lines.append(f"  {dotted} (env {env}): {err['msg']}")
    return "\n".join(lines)


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def as_environment(settings: Settings) -> dict[str, str]:
    """BLUEGREEN_* variables that make a child `bluegreen` process build these settings.

    Holds secrets: hand it only to a child process's environment, never to a log.
    """
    env = {
        f"{ENV_PREFIX}{name.upper()}": getattr(settings, name).get_secret_value()
        for name in ("blue_dsn", "green_dsn", "control_dsn")
    }
    env[f"{ENV_PREFIX}DOMAIN"] = settings.domain
    data = settings.model_dump(mode="json")
    for section in (
        "kafka",
        "stack",
        "snapshot",
        "cdc",
        "consumer",
        "reverse_apply",
        "shadow",
        "metrics",
        "log",
    ):
        value = getattr(settings, section)
        for key, item in data[section].items():
            if item is None:
                continue
            secret = getattr(value, key)
            plain = secret.get_secret_value() if isinstance(secret, SecretStr) else item
            text = json.dumps(plain) if isinstance(plain, (dict, list)) else str(plain)
            env[f"{ENV_PREFIX}{section.upper()}__{key.upper()}"] = text
    return env
