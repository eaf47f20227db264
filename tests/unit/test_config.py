from pathlib import Path

import pytest

from bluegreen.core.config import KafkaSettings, as_environment, load_settings
from bluegreen.core.errors import ConfigError


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.blue_dsn.get_secret_value() == "postgresql://postgres@127.0.0.1:15432/blue"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.kafka.dlq_topic == "bluegreen.catalog.changes.dlq"
    assert settings.kafka.partitions == 6


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.kafka.topic = "other"  # type: ignore[misc]


def test_environment_overrides_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("BLUEGREEN_STACK__BLUE_PORT", "6000")
    settings = load_settings()
    assert settings.kafka.partitions == 12
    assert settings.blue_dsn.get_secret_value().endswith(":6000/blue")


def test_bad_setting_is_named_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_KAFKA__PARTITIONS", "zero")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "BLUEGREEN_KAFKA__PARTITIONS" in str(err.value)
    assert "kafka.partitions" in str(err.value)


def test_secrets_never_show_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_BLUE_DSN", "postgresql://app:hunter2@db:5432/blue")
    monkeypatch.setenv("BLUEGREEN_KAFKA__SASL_PASSWORD", "kafka-pw-xyz")
    monkeypatch.setenv("BLUEGREEN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BLUEGREEN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    settings = load_settings()
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert "hunter2" not in text
    assert "kafka-pw-xyz" not in text
    # ...but librdkafka gets them.
    conf = settings.kafka.client_config()
    assert conf["sasl.password"] == "kafka-pw-xyz"
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"


def test_secret_in_an_invalid_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_GREEN_DSN", "mysql://root:topsecret@h/db")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "topsecret" not in str(err.value)
    assert "green_dsn" in str(err.value)


def test_unsafe_kafka_overrides_are_refused() -> None:
    with pytest.raises(ValueError, match=r"enable\.auto\.commit"):
        KafkaSettings(extra={"enable.auto.commit": "true"})
    with pytest.raises(ValueError, match="bootstrap_servers"):
        KafkaSettings(bootstrap_servers="no port here")
    with pytest.raises(ValueError, match="SASL"):
        KafkaSettings(sasl_mechanism="PLAIN")


def test_tls_and_extra_settings_pass_through() -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location=Path("/etc/ca.pem"),
        extra={"socket.keepalive.enable": "true"},
    )
    conf = kafka.client_config()
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["socket.keepalive.enable"] == "true"


def test_config_file_then_env_then_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bluegreen.toml"
    config.write_text('[kafka]\ntopic = "from.file"\npartitions = 3\n')
    settings = load_settings(config)
    assert (settings.kafka.topic, settings.kafka.partitions) == ("from.file", 3)
    monkeypatch.setenv("BLUEGREEN_KAFKA__PARTITIONS", "4")
    assert load_settings(config).kafka.partitions == 4
    cli = load_settings(config, {"log": {"format": "json"}})
    assert cli.log.format == "json"
    assert cli.kafka.topic == "from.file"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_stack_refuses_non_loopback_and_clashing_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_STACK__HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="loopback"):
        load_settings()
    monkeypatch.delenv("BLUEGREEN_STACK__HOST")
    monkeypatch.setenv("BLUEGREEN_STACK__GREEN_PORT", "15432")
    with pytest.raises(ConfigError, match="distinct"):
        load_settings()


def test_the_domain_is_named_by_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().domain == "schemas.catalog:CATALOG"
    monkeypatch.setenv("BLUEGREEN_DOMAIN", "tests.support.tiny:TINY")
    settings = load_settings()
    assert settings.domain == "tests.support.tiny:TINY"
    assert as_environment(settings)["BLUEGREEN_DOMAIN"] == "tests.support.tiny:TINY"
    monkeypatch.setenv("BLUEGREEN_DOMAIN", "no colon here")
    with pytest.raises(ConfigError, match="BLUEGREEN_DOMAIN"):
        load_settings()
