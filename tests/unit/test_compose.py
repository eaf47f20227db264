"""No Docker engine runs here, so the compose file is checked against the native stack."""

import itertools
from pathlib import Path
from typing import Any

import yaml

from bluegreen.app.stack.postgres import BLUE_SETTINGS
from bluegreen.core.config import Settings, StackSettings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data["services"]


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, and the host side must be loopback."""
    mapping = {}
    for entry in service["ports"]:
        host_ip, host_port, container_port = entry.split(":")
        assert host_ip == "127.0.0.1", entry
        mapping[int(container_port)] = int(host_port)
    return mapping


def command_settings(service: dict[str, Any]) -> dict[str, str]:
    args = service["command"]
    return dict(arg.split("=", 1) for prev, arg in itertools.pairwise(args) if prev == "-c")


def test_services_match_the_native_stack() -> None:
    services = load()
    stack = StackSettings()
    assert {"blue", "green", "control", "kafka", "prometheus"} <= set(services)
    for name in ("blue", "green", "control"):
        service = services[name]
        assert service["image"].startswith("postgres:15")
        assert published(service) == {5432: getattr(stack, f"{name}_port")}
        assert service["environment"]["POSTGRES_DB"] == name
        assert service["environment"]["POSTGRES_USER"] == "postgres"


def test_blue_and_green_are_configured_for_logical_decoding_like_the_native_ones() -> None:
    for name in ("blue", "green"):  # green: the reverse capture's slot (issue 14)
        assert command_settings(load()[name]) == {
            **BLUE_SETTINGS,
            "max_connections": "200",
        }


def test_kafka_is_kraft_and_advertises_the_native_address() -> None:
    kafka = load()["kafka"]
    stack = StackSettings()
    env = kafka["environment"]
    assert kafka["image"] == f"apache/kafka:{stack.kafka_version}"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{stack.kafka_port}"
    assert published(kafka) == {stack.kafka_port: stack.kafka_port}
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_default_settings_reach_the_compose_services() -> None:
    settings = Settings()
    services = load()
    for name in ("blue", "green", "control"):
        dsn = getattr(settings, f"{name}_dsn").get_secret_value()
        assert dsn == f"postgresql://postgres@127.0.0.1:{published(services[name])[5432]}/{name}"
    assert settings.kafka.bootstrap_servers == f"127.0.0.1:{published(services['kafka'])[19092]}"
