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


SECRET = "hunter2-s3cret"

#: URLs carrying a secret next to an invalid option or value: the error must not echo it.
LEAKY_URLS = [
    f"kafka://h:9092?sasl_password={SECRET}&partitions=zero",
    f"kafka://h:9092?sasl_password={SECRET}&bogus=1",
    f"kafka://user:{SECRET}@h:9092?session_timeout_ms=1",
    f"kafka://h:9092?ssl_key_password={SECRET}&security_protocol=NOPE",
    f"amqp://user:{SECRET}@h/v?heartbeat=soon",
    f"amqp://user:{SECRET}@h:notaport/v",
    f"amqp://h/v?tls_key_password={SECRET}&tls_verify=perhaps",
    f"sqs://eu-west-1?aws_secret_access_key={SECRET}&wait_time_seconds=99",
    f"sqs://eu-west-1?aws_access_key_id={SECRET}&aws_session_token={SECRET}&bogus=1",
    f"amqp://user:{SECRET}@[bad/v",
]


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_configuration_errors_never_echo_a_secret(url: str) -> None:
    with pytest.raises(workq.ConfigurationError) as raised:
        parse_url(url)
    assert SECRET not in str(raised.value)
    assert "***" in str(raised.value) or "bogus" in str(raised.value)


def test_cli_errors_never_echo_a_secret() -> None:
    from typer.testing import CliRunner

    from workq.cli import cli

    result = CliRunner().invoke(cli, ["stats", "q", "--url", LEAKY_URLS[0]])
    assert result.exit_code == 1
    assert SECRET not in result.output
    assert "sasl_password=***" in result.stderr


@pytest.mark.parametrize(
    "settings",
    [
        RabbitMQSettings(password=SECRET, tls_key_password=SECRET),  # type: ignore[arg-type]
        KafkaSettings(sasl_username="u", sasl_password=SECRET, ssl_key_password=SECRET),  # type: ignore[arg-type]
        SQSSettings(
            aws_access_key_id=SECRET,  # type: ignore[arg-type]
            aws_secret_access_key=SECRET,  # type: ignore[arg-type]
            aws_session_token=SECRET,  # type: ignore[arg-type]
        ),
    ],
    ids=["rabbitmq", "kafka", "sqs"],
)
def test_secrets_stay_out_of_repr_and_redacted_urls(
    settings: workq.settings.BackendSettings,
) -> None:
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in settings.redacted_url()
    assert SECRET not in repr(Settings(backend=settings))  # type: ignore[arg-type]


def test_one_redaction_rule_for_every_backend() -> None:
    """A field is a SecretStr exactly when its name says it is a secret, on every backend."""
    from pydantic import SecretStr

    from workq.backend_settings import is_secret

    for cls in (MemorySettings, SqliteSettings, RabbitMQSettings, SQSSettings, KafkaSettings):
        for name, field in cls.model_fields.items():
            typed_secret = SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
            assert typed_secret == is_secret(name), f"{cls.__name__}.{name}"


def test_secret_options_are_masked_in_urls() -> None:
    from workq.backend_settings import redact_url

    shown = redact_url(f"kafka://u:{SECRET}@h:9092?sasl_password={SECRET}&partitions=3")
    assert SECRET not in shown
    assert shown == "kafka://u:***@h:9092?sasl_password=***&partitions=3"
    assert redact_url(f"amqp://u:{SECRET}@[bad") == "amqp://***"


def test_connect_timeouts_must_be_finite() -> None:
    with pytest.raises(workq.ConfigurationError, match="connect_timeout"):
        parse_url("memory://?connect_timeout=nan")
    with pytest.raises(workq.ConfigurationError, match="publish_timeout"):
        parse_url("memory://?publish_timeout=0")


def test_backend_settings_as_a_mapping_go_through_the_registry() -> None:
    typed = Settings(backend={"backend": "sqs", "region": "eu-west-1"})  # type: ignore[arg-type]
    assert typed.resolve() == SQSSettings(region="eu-west-1")
    with pytest.raises(ValueError, match="no workq backend named 'nope'; known backends"):
        Settings(backend={"backend": "nope"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need a 'backend' key"):
        Settings(backend={"region": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bogus") as info:
        Settings(backend={"backend": "rabbitmq", "password": "hunter2", "bogus": 1})  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)
