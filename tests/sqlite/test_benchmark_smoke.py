"""The SQLite benchmark still runs (no speed threshold: speed lives in benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sqlite

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sqlite.py"


def test_benchmark_prints_ratios(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WORKQ_URL"}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--n", "50", "--url", f"sqlite://{tmp_path / 'b.db'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout
    assert result.stdout.count("msg/s") >= 1
    assert len([line for line in result.stdout.splitlines() if "publish" in line]) == 2
