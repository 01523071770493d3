"""The Kafka benchmark runs end to end with a small N, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "kafka.py"


def test_benchmark_prints_ratios(kafka_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--n",
            "300",
            "--batch",
            "100",
            "--fast",
            "20",
            "--slow",
            "1",
            "--join-wait",
            "0",
            "--skewed",
            "6x0.05,2x0.3",
            "--workers",
            "2",
        ],
        env={**os.environ, "WORKQ_BENCH_KAFKA_URL": kafka_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "ratio" in line]
    assert [line.split()[0] for line in lines] == ["produce", "consume", "head-of-line"], (
        result.stdout
    )
    assert "mode=group" in result.stdout and "mode=share" in result.stdout, result.stdout
