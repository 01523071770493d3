"""The workq command on the embedded SQLite backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

import workq
from workq.cli import cli
from workq.testing.conformance import until

pytestmark = pytest.mark.sqlite

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'cli.db'}"


@pytest.fixture
def queue() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def test_publish_then_stats(url: str, queue: str) -> None:
    result = runner.invoke(
        cli,
        ["publish", queue, '{"n": 1}', "--json", "--url", url, "--tenant", "acme", "-H", "k=v"],
    )
    assert result.exit_code == 0, result.output
    mid = result.output.strip()
    runner.invoke(cli, ["publish", queue, "urgent", "--url", url, "--priority", "7"])
    with workq.connect(url) as broker, broker.consumer(queue, tenants=["acme"]) as c:
        d = c.get(timeout=5)
        assert d is not None
        assert (d.id, d.json(), d.headers["k"]) == (mid, {"n": 1}, "v")
        d.nack()
    result = runner.invoke(cli, ["stats", queue, "--url", url])
    assert result.exit_code == 0, result.output
    assert "acme" in result.output and "(default)" in result.output
    assert "dead letters: 0" in result.output


def test_url_from_environment(url: str, queue: str) -> None:
    result = runner.invoke(cli, ["publish", queue, "x"], env={"WORKQ_URL": url})
    assert result.exit_code == 0, result.output
    with workq.connect(url) as broker:
        assert broker.stats(queue).ready == 1


def test_dlq_shows_reasons_and_redrives(url: str, queue: str) -> None:
    with workq.connect(url) as broker:
        broker.producer().publish(queue, "poison")
        with broker.consumer(queue) as c:
            d = c.get(timeout=5)
            assert d is not None
            d.reject("cannot parse")
    result = runner.invoke(cli, ["dlq", queue, "--url", url])
    assert result.exit_code == 0, result.output
    assert "cannot parse" in result.output and "poison" in result.output
    result = runner.invoke(cli, ["dlq", queue, "--url", url, "--redrive"])
    assert "moved 1" in result.output
    with workq.connect(url) as broker:
        assert broker.stats(queue).ready == 1
        assert broker.dead_letters(queue) == []


def test_move_copies_everything_then_acks(tmp_path: Path, url: str, queue: str) -> None:
    target = f"sqlite://{tmp_path / 'target.db'}"
    with workq.connect(url) as broker:
        ids = broker.producer().publish_many(
            queue,
            [workq.Message({"i": i}, tenant=f"t{i % 3}", priority=i % 2) for i in range(50)],
        )
    result = runner.invoke(cli, ["move", queue, "--from", url, "--to", target, "--idle", "0.5"])
    assert result.exit_code == 0, result.output
    assert "moved 50" in result.output
    with workq.connect(url) as src:
        assert src.stats(queue).ready == 0
    got: dict[str, tuple[int, str | None, int, str]] = {}
    with workq.connect(target) as dst, dst.consumer(queue, prefetch=50) as c:
        while len(got) < 50:
            d = c.get(timeout=5)
            assert d is not None
            got[d.id] = (d.json()["i"], d.tenant, d.priority, d.headers["content-type"])
            d.ack()
    assert set(got) == set(ids)
    assert all(t == f"t{i % 3}" and p == i % 2 for i, t, p, _ in got.values())
    assert {ct for *_, ct in got.values()} == {"application/json"}


def test_errors_are_one_line_without_traceback(url: str) -> None:
    result = runner.invoke(cli, ["publish", "bad queue", "x", "--url", url])
    assert result.exit_code == 1
    assert "invalid queue name" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["stats", "q", "--url", "nope://x"])
    assert result.exit_code == 1 and "unknown scheme" in result.output
    result = runner.invoke(cli, ["publish", "q", "x"], env={"WORKQ_URL": ""})
    assert result.exit_code == 1
    result = runner.invoke(cli, ["run", "no_such_module_xyz:app", "--url", url])
    assert result.exit_code == 1 and "cannot import" in result.output


@pytest.mark.slow
def test_run_processes_then_stops_gracefully_on_sigterm(
    tmp_path: Path, url: str, queue: str
) -> None:
    done = tmp_path / "done.txt"
    (tmp_path / "myjobs.py").write_text(
        textwrap.dedent(
            f"""
            import workq
            from pydantic import BaseModel

            class Job(BaseModel):
                n: int

            app = workq.App()

            @app.handler({queue!r}, concurrency=2)
            def handle(job: Job) -> None:
                with open({str(done)!r}, "a") as f:
                    f.write(f"{{job.n}}\\n")
            """
        )
    )
    env = {**os.environ, "WORKQ_URL": url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workq.cli", "run", "myjobs:app", "--concurrency", "3"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with workq.connect(url) as broker:
            broker.producer().publish_many(queue, [{"n": i} for i in range(10)])
            until(
                lambda: done.exists() and len(done.read_text().split()) == 10,
                what="the app to handle every job",
            )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "stopped" in stderr
        assert sorted(int(x) for x in done.read_text().split()) == list(range(10))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
