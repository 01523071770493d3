"""The SQS benchmark still runs (small N, no speed threshold)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sqs

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "sqs.py"


def test_benchmark_prints_ratios_and_request_counts(sqs_url: str) -> None:
    env = dict(os.environ, WORKQ_BENCH_SQS_URL=sqs_url)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout and "req/msg" in done.stdout
    assert "consume+ack" in done.stdout
