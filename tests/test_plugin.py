"""The broker-fixture resolution order of workq.testing."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from workq.testing import plugin
from workq.testing.brokers import BrokerProcess, NotAvailable, free_port, wait_port


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
