"""``workq run`` with --metrics-port and --health-port against the real brokers, and
through a RabbitMQ node restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from workq.testing.brokers.rabbitmq import Node, start_local
from workq.testing.conformance import unique, until

from .test_resilience import status

APP = """
import logging
import workq

app = workq.App()
log = logging.getLogger("obsapp")


@app.handler("{queue}", concurrency=2)
def handle(d: workq.Delivery) -> None:
    log.info("handled %s", d.text())
"""


class Running:
    """``workq run`` in a subprocess, its stderr collected by a thread."""

    def __init__(self, tmp_path: Path, url: str, queue: str, *args: str) -> None:
        (tmp_path / "obsapp.py").write_text(APP.format(queue=queue))
        env = {**os.environ, "WORKQ_URL": url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workq.cli", "run", "obsapp:app", *args],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def port(self) -> int:
        def find() -> int | None:
            for line in list(self.lines):
                m = re.search(r"serving HTTP on port (\d+)", line)
                if m:
                    return int(m.group(1))
            assert self.proc.poll() is None, "".join(self.lines)
            return None

        found: int = until(find, what="the HTTP port")
        return found

    def metrics(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def acked(self, port: int, queue: str) -> float:
        pattern = (
            rf'workq_messages_processed_total\{{outcome="ack",queue="{queue}",tenant=""\}} (\S+)'
        )
        m = re.search(pattern, self.metrics(port))
        return float(m.group(1)) if m else 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(60)
        self._reader.join(5)
        return rc


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("sqs", marks=pytest.mark.sqs),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
def broker_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_workq_run_serves_metrics_and_health(broker_url: str, tmp_path: Path) -> None:
    q = unique()
    run = Running(
        tmp_path, broker_url, q, "--metrics-port", "0", "--health-port", "0", "--log-format", "json"
    )
    try:
        port = run.port()
        until(lambda: status(port, "/readyz") == 200, what="/readyz to say ready")
        assert status(port, "/livez") == 200
        with workq.connect(broker_url) as broker:
            broker.producer().publish_many(q, [f"m{i}" for i in range(10)])
        until(lambda: run.acked(port, q) == 10, what="10 acks in /metrics")
        text = run.metrics(port)
        assert f'workq_handler_duration_seconds_count{{queue="{q}",tenant=""}} 10.0' in text
        assert "workq_in_flight" in text
    finally:
        assert run.stop() == 0
    records = [json.loads(line) for line in run.lines if line.startswith("{")]
    handled = [r for r in records if r["logger"] == "obsapp"]
    assert len(handled) == 10 and all(r["level"] == "INFO" for r in handled)


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[Node]:
    proc = start_local(tmp_path / "node")
    node = proc.info["node"]
    assert isinstance(node, Node)
    try:
        yield node
    finally:
        proc.stop()


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_workq_run_rides_out_a_rabbitmq_restart(own_node: Node, tmp_path: Path) -> None:
    q = unique()
    run = Running(tmp_path, own_node.url, q, "--health-port", "0", "--metrics-port", "0")
    try:
        port = run.port()
        until(lambda: status(port, "/readyz") == 200, what="ready", timeout=60)
        with workq.connect(own_node.url) as broker:
            broker.producer().publish_many(q, [f"a{i}" for i in range(20)])
        until(lambda: run.acked(port, q) == 20, what="the first 20", timeout=60)
        own_node.stop()
        own_node.start()
        with workq.connect(own_node.url) as broker:
            broker.producer().publish_many(q, [f"b{i}" for i in range(20)])
        until(lambda: run.acked(port, q) >= 40, what="all 40 after the restart", timeout=120)
        until(lambda: status(port, "/readyz") == 200, what="ready again", timeout=60)
        assert run.proc.poll() is None, "workq run ended during the restart"
    finally:
        assert run.stop() == 0, "".join(run.lines)
    text = "".join(run.lines)
    # One warning per outage and one info line per recovery, not one per reconnect
    # attempt (the restart takes several). A node that accepts connections before its
    # queues are back may make that two short outages, not more.
    lost, back = text.count("connection lost"), text.count("connection back")
    assert lost == back and lost <= 2, text
