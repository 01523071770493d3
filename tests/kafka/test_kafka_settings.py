"""Kafka URL settings checked before any I/O (no broker needed)."""

from __future__ import annotations

import pytest

import workq
from workq.backends.kafka.settings import KafkaSettings


@pytest.mark.parametrize(
    "query",
    [
        "partitions=x",
        "mode=queue",
        "linger_ms=-1",
        "bogus=1",
        "share_lock_timeout=0",
        "lane_idle=1",
        "lane_idle_sweep=0",
    ],
)
def test_sasl_password_is_never_in_a_configuration_error(query: str) -> None:
    with pytest.raises(workq.ConfigurationError) as info:
        workq.connect(f"kafka://127.0.0.1:1?sasl_password=s3cr3t-pw&{query}")
    assert "s3cr3t-pw" not in str(info.value)
    assert query.split("=")[0] in str(info.value)


def test_mode_defaults_to_consumer_groups_and_accepts_share() -> None:
    assert KafkaSettings.from_url("kafka://h:9092").mode == "group"
    assert KafkaSettings.from_url("kafka://h:9092?mode=share").mode == "share"


def test_replication_factor_is_chosen_by_cluster_size_unless_given() -> None:
    assert KafkaSettings.from_url("kafka://h:9092").replication_factor is None
    assert KafkaSettings.from_url("kafka://h:9092?replication_factor=2").replication_factor == 2


def test_lane_idle_is_off_or_outlasts_a_producers_note_interval() -> None:
    assert KafkaSettings.from_url("kafka://h:9092").lane_idle == 5.0
    assert KafkaSettings.from_url("kafka://h:9092?lane_idle=0").lane_idle == 0
    with pytest.raises(workq.ConfigurationError, match=r"lane_idle must be 0 .* or at least 2"):
        workq.connect("kafka://127.0.0.1:1?lane_idle=0.5")
