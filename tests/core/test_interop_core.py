"""The core's side of interop, checked before any I/O: exchange publishing on backends
without exchanges, and the arguments of passive declarations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import workq
import workq.aio


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_exchange_publishing_is_unsupported_without_exchanges(backend: str, tmp_path: Path) -> None:
    url = "memory://" if backend == "memory" else f"sqlite://{tmp_path / 'jobs.db'}"
    with workq.connect(url) as broker:
        p = broker.producer()
        with pytest.raises(workq.Unsupported, match=r"exchange.*routing_key") as err:
            p.publish(None, b"x", exchange="tenants", routing_key="acme")
        assert err.value.backend == broker.backend
        with pytest.raises(ValueError, match="needs exchange"):
            p.publish("q", b"x", routing_key="acme")
        assert broker.stats("q").ready == 0

    async def aio() -> None:
        async with await workq.aio.connect(url) as broker, broker.producer() as p:
            with pytest.raises(workq.Unsupported, match="exchange"):
                await p.publish(None, b"x", exchange="tenants", routing_key="acme")
            with pytest.raises(workq.ConfigurationError, match="needs exchange"):
                await p.publish(None, b"x")

    asyncio.run(aio())


def test_passive_declare_takes_no_settings_and_a_bool() -> None:
    with workq.connect("memory://") as broker:
        with pytest.raises(workq.ConfigurationError, match="takes no settings"):
            broker.declare("q", passive=True, max_attempts=3)
        with pytest.raises(workq.ConfigurationError, match="passive"):
            broker.declare("q", passive="yes")  # type: ignore[arg-type]
        with pytest.raises(workq.QueueNotFound, match="memory"):
            broker.declare("q", passive=True)
        assert isinstance(workq.QueueNotFound("x"), workq.ConfigurationError)
