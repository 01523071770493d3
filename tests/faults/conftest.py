"""Fixtures of the fault tests: one URL per backend, real brokers for the three servers."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Every backend; the three servers come from the workq.testing plugin's fixtures.
BACKENDS = ["memory", "sqlite", "rabbitmq", "sqs", "kafka"]


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'workq.db'}"
    url: str = request.getfixturevalue(f"{backend}_url")
    return url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of each backend in turn."""
    return backend_url(request, request.param, tmp_path)
