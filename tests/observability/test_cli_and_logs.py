"""Operator commands with --json, ``workq queues``, and the log formats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import workq
from workq.cli import cli
from workq.logs import JsonFormatter, configure_logging
from workq.testing.conformance import unique

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'ops.db'}"


def test_stats_and_dlq_as_json_and_queue_list(url: str) -> None:
    q = unique()
    with workq.connect(url) as broker:
        broker.producer().publish_many(q, ["a", workq.Message("b", tenant="acme")])
        with broker.consumer(q) as c:
            d = c.get(timeout=5)
            assert d is not None
            d.reject("broken input")
        broker.declare(unique("other"))
        names = broker.queues()

    result = runner.invoke(cli, ["stats", q, "--json", "--url", url])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["queue"] == q and stats["ready"] == 1 and stats["dead_letters"] == 1
    assert {lane["tenant"] for lane in stats["lanes"]} <= {None, "acme"}

    result = runner.invoke(cli, ["dlq", q, "--json", "--url", url])
    assert result.exit_code == 0, result.output
    dlq = json.loads(result.output)
    assert dlq["total"] == 1 and dlq["dead_letters"][0]["reason"] == "broken input"

    result = runner.invoke(cli, ["dlq", q, "--json", "--redrive", "--url", url])
    assert json.loads(result.output) == {"queue": q, "moved": 1}

    result = runner.invoke(cli, ["queues", "--json", "--url", url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == names and q in names
    result = runner.invoke(cli, ["queues", "--url", url])
    assert q in result.output.split()


def test_listing_queues_where_the_driver_cannot_names_the_backend() -> None:
    from .flaky import flaky

    broker, _ = flaky("memory://")  # a driver without queues(): the base class answers
    with broker, pytest.raises(workq.Unsupported, match="memory backend does not support"):
        broker.queues()


@pytest.fixture
def clean_root() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:], root.level = saved


def test_configure_logging_only_when_the_app_has_not(clean_root: logging.Logger) -> None:
    clean_root.handlers[:] = []  # pytest's capture handlers come back for each test phase
    assert configure_logging("json", "debug") is True
    assert isinstance(clean_root.handlers[0].formatter, JsonFormatter)
    assert clean_root.level == logging.DEBUG
    assert logging.getLogger("pika").getEffectiveLevel() >= logging.WARNING
    mine = logging.StreamHandler()
    clean_root.handlers[:] = [mine]
    assert configure_logging("text", "INFO") is False  # the app set up logging itself
    assert clean_root.handlers == [mine]
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("text", "LOUD")


def test_json_records_carry_workq_fields() -> None:
    record = logging.LogRecord("workq", logging.WARNING, "", 0, "failed %s", ("x",), None)
    record.queue, record.message_id, record.tenant = "q", "m1", "acme"
    record.attempt, record.outcome = 2, workq.Outcome.RETRY
    try:
        raise KeyError("k")
    except KeyError:
        import sys

        record.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed x" and out["level"] == "WARNING"
    assert (out["queue"], out["message_id"], out["tenant"]) == ("q", "m1", "acme")
    assert (out["attempt"], out["outcome"]) == (2, "retry")
    assert "KeyError" in out["error"]


def test_handler_failures_are_logged_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from workq.testing.conformance import until

    with workq.connect("memory://") as broker:
        broker.producer().publish("q", "x", tenant="acme")

        def handle(d: workq.Delivery) -> None:
            raise KeyError("boom")

        worker = broker.worker("q", handle, retry=workq.RetryPolicy(base=10))
        t = threading.Thread(target=worker.run)
        t.start()
        try:
            until(lambda: worker.processed == 1, what="the failure")
        finally:
            worker.stop()
            t.join(10)
    (record,) = [r for r in caplog.records if "failed on" in r.getMessage()]
    assert (record.queue, record.tenant, record.attempt) == ("q", "acme", 1)  # type: ignore[attr-defined]
