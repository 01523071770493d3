"""The broker-fixture resolution order of workq.testing, and each fixture's container path."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

import workq
from workq.testing import plugin
from workq.testing.brokers import (
    BrokerProcess,
    NotAvailable,
    docker_engine_problem,
    free_port,
    wait_port,
)
from workq.testing.conformance import unique, until


def _fake_launcher(monkeypatch: pytest.MonkeyPatch, local: object, container: object) -> None:
    def way(result: object):  # type: ignore[no-untyped-def]
        def start(*args: object) -> BrokerProcess:
            if isinstance(result, Exception):
                raise result
            return result  # type: ignore[return-value]

        return start

    module = types.ModuleType("workq.testing.brokers.fake")
    module.start_local = way(local)  # type: ignore[attr-defined]
    module.start_container = way(container)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workq.testing.brokers.fake", module)


def test_env_url_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("WORKQ_TEST_FAKE_URL", "fake://given")
    _fake_launcher(monkeypatch, NotAvailable("unused"), NotAvailable("unused"))
    assert list(plugin.broker_url("fake", tmp_path_factory)) == ["fake://given"]


def test_local_process_then_container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # As where an engine answers; the real engine check has its own tests below.
    monkeypatch.setattr(plugin, "docker_engine_problem", lambda: None)
    stopped: list[str] = []
    proc = BrokerProcess("fake://local", lambda: stopped.append("local"))
    _fake_launcher(monkeypatch, proc, NotAvailable("no docker"))
    assert plugin.start_broker("fake", tmp_path) is proc
    _fake_launcher(monkeypatch, NotAvailable("not installed"), BrokerProcess("fake://box"))
    assert plugin.start_broker("fake", tmp_path).url == "fake://box"
    _fake_launcher(monkeypatch, NotAvailable("not installed"), NotAvailable("no docker"))
    with pytest.raises(NotAvailable, match=r"not installed.*no docker"):
        plugin.start_broker("fake", tmp_path)


def test_unavailable_broker_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.delenv("WORKQ_TEST_FAKE_URL", raising=False)
    _fake_launcher(monkeypatch, NotAvailable("nope"), NotAvailable("nope"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        list(plugin.broker_url("fake", tmp_path_factory))
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="nope"):
        list(plugin.broker_url("fake", tmp_path_factory))


def test_started_broker_is_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.delenv("WORKQ_TEST_FAKE_URL", raising=False)
    stopped: list[bool] = []
    _fake_launcher(monkeypatch, BrokerProcess("fake://x", lambda: stopped.append(True)), None)
    gen = plugin.broker_url("fake", tmp_path_factory)
    assert next(gen) == "fake://x"
    gen.close()
    assert stopped == [True]


def test_port_helpers() -> None:
    import socket

    port = free_port()
    with pytest.raises(TimeoutError):
        wait_port(port, timeout=0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        wait_port(port, timeout=2)


def test_no_engine_is_a_plain_reason_and_the_container_is_not_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A port nothing listens on stands for a docker client with no engine behind it.
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    problem = docker_engine_problem(timeout=2.0)
    assert problem is not None and problem.startswith("no Docker engine answers")
    _fake_launcher(monkeypatch, NotAvailable("not installed"), BrokerProcess("fake://box"))
    with pytest.raises(NotAvailable, match=r"start_container: no Docker engine answers"):
        plugin.start_broker("fake", tmp_path)


@pytest.mark.parametrize("name", ["rabbitmq", "sqs", "kafka"])
def test_container_path_gives_a_working_broker(name: str) -> None:
    problem = docker_engine_problem()
    if problem is not None:
        # The one skip allowed under CI=true: these machines, CI included, have a docker
        # client but no engine, so no container can run there. Every other broker test
        # still fails in CI when its broker cannot start.
        pytest.skip(
            f"container path of the {name} fixture not run: {problem}. This machine and "
            "its CI have a docker client but no Docker engine; the test runs wherever "
            "one answers"
        )
    launcher = importlib.import_module(f"workq.testing.brokers.{name}")
    proc = launcher.start_container()  # an engine answers: not starting is a failure
    try:
        queue = unique("container")
        with workq.connect(proc.url) as broker:
            with broker.producer() as p:
                p.publish(queue, {"via": "container"})
            with broker.consumer(queue) as c:
                d = until(lambda: c.get(timeout=1.0), what=f"the message via the {name} container")
                assert d is not None and d.json() == {"via": "container"}
                d.ack()
    finally:
        proc.stop()
