"""Log throttling of the Kafka backend: an outage gives a few lines, not thousands."""

from __future__ import annotations

import logging

import pytest

from workq.backends.kafka.logs import ClientLogFilter, Throttle


def test_throttle_lets_the_first_through_then_counts_the_rest() -> None:
    throttle = Throttle(interval=3600)
    assert throttle.allow("_TRANSPORT") == (True, 0)
    assert [throttle.allow("_TRANSPORT")[0] for _ in range(1000)] == [False] * 1000
    assert throttle.allow("_ALL_BROKERS_DOWN") == (True, 0)


def test_throttle_reports_how_many_were_suppressed_when_the_interval_is_over() -> None:
    throttle = Throttle(interval=0)
    throttle.allow("x")
    assert throttle.allow("x") == (True, 0)


def test_client_log_filter_keeps_one_line_per_facility(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("workq.kafka.test-filter")
    logger.addFilter(ClientLogFilter(interval=3600))
    with caplog.at_level(logging.INFO, logger=logger.name):
        for _ in range(500):
            logger.error("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "Connect failed")
        logger.warning("%s [%s] %s", "REQTMOUT", "rdkafka#consumer-1", "Timed out")
    assert [r.args[0] for r in caplog.records] == ["FAIL", "REQTMOUT"]  # type: ignore[index]
