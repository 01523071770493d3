"""URLs and settings: every backend's URL form, env, redaction and clear errors."""

from __future__ import annotations

import pytest

import workq
from workq.settings import (
    KafkaSettings,
    MemorySettings,
    RabbitMQSettings,
    Settings,
    SqliteSettings,
    SQSSettings,
    load,
    parse_url,
)


def test_rabbitmq_url_with_host_list_and_vhost() -> None:
    s = parse_url("amqp://user:p%40ss@h1:5673,h2/jobs?heartbeat=10&queue_type=classic")
    assert isinstance(s, RabbitMQSettings)
    assert s.hosts == ["h1:5673", "h2:5672"]
    assert (s.username, s.password.get_secret_value(), s.vhost) == ("user", "p@ss", "jobs")
    assert (s.heartbeat, s.queue_type, s.tls) == (10, "classic", False)
    assert parse_url("amqps://h").hosts == ["h:5671"]  # type: ignore[attr-defined]


def test_sqs_kafka_sqlite_memory_urls() -> None:
    sqs = parse_url("sqs://eu-west-1?endpoint_url=http://127.0.0.1:4566&wait_time_seconds=5")
    assert isinstance(sqs, SQSSettings)
    assert (sqs.region, sqs.endpoint_url, sqs.wait_time_seconds) == (
        "eu-west-1",
        "http://127.0.0.1:4566",
        5,
    )
    kafka = parse_url("kafka://u:pw@k1:9093,k2?security_protocol=SASL_SSL&partitions=6")
    assert isinstance(kafka, KafkaSettings)
    assert kafka.bootstrap_servers == ["k1:9093", "k2:9092"]
    assert (kafka.sasl_username, kafka.partitions) == ("u", 6)
    sqlite = parse_url("sqlite:///var/lib/app/jobs.db")
    assert isinstance(sqlite, SqliteSettings) and sqlite.path == "/var/lib/app/jobs.db"
    assert parse_url("sqlite://rel/jobs.db").path == "rel/jobs.db"  # type: ignore[attr-defined]
    assert parse_url("memory://shared") == MemorySettings(name="shared")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://h", "'redis'"),
        ("not a url", "not a workq URL"),
        ("amqp://h?colour=blue", "colour"),
        ("kafka://h?session_timeout_ms=10", "session_timeout_ms"),
        ("sqs://r?wait_time_seconds=99", "wait_time_seconds"),
        ("amqp://h:port/", "port"),
        ("sqlite://", "names no file"),
    ],
)
def test_bad_urls_name_the_problem(url: str, named: str) -> None:
    with pytest.raises(workq.ConfigurationError, match=named):
        parse_url(url)


def test_unknown_option_lists_allowed_ones() -> None:
    with pytest.raises(workq.ConfigurationError, match=r"allowed options are: .*heartbeat"):
        parse_url("amqp://h?nope=1")


def test_secrets_are_masked() -> None:
    url = "amqp://bob:hunter2@h1/v"
    assert "hunter2" not in repr(Settings(url=url))
    assert "hunter2" not in repr(Settings.from_url(url))
    assert "hunter2" not in parse_url(url).redacted_url()
    with pytest.raises(workq.ConfigurationError) as err:
        parse_url("amqp://bob:hunter2@h1/v?heartbeat=soon")
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in repr(workq.connect("memory://"))


def test_env_url_and_missing_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKQ_URL", raising=False)
    with pytest.raises(workq.ConfigurationError, match="WORKQ_URL"):
        workq.connect()
    monkeypatch.setenv("WORKQ_URL", "memory://from-env")
    with workq.connect() as broker:
        assert broker.settings == MemorySettings(name="from-env")


def test_typed_settings_and_overrides() -> None:
    typed = Settings(backend=RabbitMQSettings(hosts=["a:1"]))
    assert load(typed).hosts == ["a:1"]  # type: ignore[attr-defined]
    assert load(MemorySettings(), publish_retries=2).publish_retries == 2
    with pytest.raises(workq.ConfigurationError, match="publish_retries"):
        load("memory://", publish_retries="many")
    with pytest.raises(workq.ConfigurationError, match="takes a URL"):
        load(42)  # type: ignore[arg-type]
    with pytest.raises(workq.ConfigurationError, match="scheme"):
        MemorySettings.from_url("amqp://h")


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in [m for m in sys.modules if m == "boto3" or m.startswith("workq.backends.sqs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if the sqs extra were not installed
    with pytest.raises(workq.ConfigurationError, match=r"pip install 'pyworkq\[sqs\]'"):
        workq.connect("sqs://us-east-1?endpoint_url=http://127.0.0.1:1")
