"""Each example runs as a user would run it, on the embedded default and on memory://."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECT = {
    "fair_dispatch": ["jobs: 80", "makespan / lower bound:"],
    "tenant_routing": ["quiet tenants starved: no"],
    "priority": ["highest priority first: yes"],
    "long_jobs": ["redelivered while running: no", "attempts [1]"],
    "cutover": ["processed 100 of 100", "lost: 0"],
}

BROKERS = {
    "sqlite-default": {},
    "memory": {"WORKQ_URL": "memory://old", "WORKQ_NEW_URL": "memory://new"},
}


@pytest.mark.sqlite
@pytest.mark.parametrize("broker", sorted(BROKERS))
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs_and_shows_its_point(name: str, broker: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKQ_")}
    # The default SQLite file goes in the temp directory: keep it inside this test's.
    env.update(TMPDIR=str(tmp_path), **BROKERS[broker])
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for line in EXPECT[name]:
        assert line in result.stdout, result.stdout
    if broker == "sqlite-default":
        assert list((tmp_path / "workq-examples").glob("*.db"))


@pytest.mark.parametrize(
    "broker", [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ("rabbitmq", "sqs", "kafka")]
)
def test_interop_example_consumes_what_a_plain_client_sent(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """The interop example needs a broker with plain clients: the real ones, each fed
    by its own client library."""
    url = request.getfixturevalue(f"{broker}_url")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKQ_")}
    env["WORKQ_URL"] = url
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "interop_plain_producer.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    for line in ("consumed 20 of 20 orders, each once: yes", "ids set: yes", "headers kept: yes"):
        assert line in result.stdout, result.stdout
