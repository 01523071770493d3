"""The RabbitMQ benchmark still runs end to end (no speed threshold: that is its job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.rabbitmq

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rabbitmq.py"


def test_benchmark_prints_ratios(rabbitmq_url: str) -> None:
    env = {**os.environ, "WORKQ_BENCH_RABBITMQ_URL": rabbitmq_url}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "ratios" in out
    assert out.count("x\n") >= 4  # one ratio line per pair
