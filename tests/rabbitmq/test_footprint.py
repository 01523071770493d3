"""A sync program on an ``amqp://`` URL loads only what it uses (issue 16, footprint).

Publishing, a ``Worker`` and ``workq run`` of a sync app each run in a fresh interpreter
and report which modules they have loaded: no asyncio, no observability library, no
pydantic-settings, no other backend, no HTTP client or server, and (``workq run``) no
rich, since each costs an idle worker memory for nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import workq
from workq.testing.conformance import unique

pytestmark = pytest.mark.rabbitmq

UNNEEDED = [
    "asyncio",
    "workq.aio",
    "aio_pika",
    "opentelemetry",
    "prometheus_client",
    "workq.contrib.opentelemetry",
    "workq.contrib.prometheus",
    "pydantic_settings",
    "workq._envsettings",
    "workq.backends.sqlite.settings",
    "workq.backends.sqs.settings",
    "workq.backends.kafka.settings",
    "boto3",
    "confluent_kafka",
    # The management API (only `workq queues` asks it) and the health endpoints.
    "urllib.request",
    "http.client",
    "http.server",
    "workq.health",
]

PUBLISH = """
import json, sys, workq
with workq.connect(sys.argv[1]) as broker:
    broker.producer().publish(sys.argv[2], b"x")
print(json.dumps({m: m in sys.modules for m in json.loads(sys.argv[3])}))
"""

# The handler looks while the worker is consuming, then stops it (graceful, from a
# handler thread: stop() only sets an event).
WORKER = """
import json, sys, workq
watched = json.loads(sys.argv[3])
seen = {}
broker = workq.connect(sys.argv[1])
def handle(d):
    seen.update({m: m in sys.modules for m in watched})
    worker.stop()
worker = broker.worker(sys.argv[2], handle, concurrency=1)
worker.run()
broker.close()
print(json.dumps(seen))
"""


def same_workq() -> dict[str, str]:
    """The environment for a child that imports the very workq under test (a relative
    PYTHONPATH would not survive the child's own working directory)."""
    root = str(Path(workq.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def run_probe(code: str, *args: str) -> dict[str, bool]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=same_workq(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def loaded(report: dict[str, bool]) -> list[str]:
    return sorted(m for m, is_loaded in report.items() if is_loaded)


def test_a_sync_publish_and_worker_load_nothing_they_do_not_use(rabbitmq_url: str) -> None:
    q = unique("footprint")
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
    watched = json.dumps(UNNEEDED)
    assert loaded(run_probe(PUBLISH, rabbitmq_url, q, watched)) == []
    report = run_probe(WORKER, rabbitmq_url, q, watched)
    assert report, "the handler never ran"
    assert loaded(report) == []


def test_workq_run_of_a_sync_app_loads_neither_rich_nor_unasked_endpoints(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    q = unique("footprintcli")
    report = tmp_path / "report.json"
    watched = [*UNNEEDED, "rich"]
    (tmp_path / "footapp.py").write_text(
        textwrap.dedent(
            f"""
            import json, os, signal, sys
            import workq

            app = workq.App()

            @app.handler({q!r}, concurrency=1)
            def handle(d: workq.Delivery) -> None:
                seen = {{m: m in sys.modules for m in {watched!r}}}
                with open({str(report)!r}, "w") as f:
                    json.dump(seen, f)
                os.kill(os.getpid(), signal.SIGTERM)  # `workq run` stops gracefully
            """
        )
    )
    with workq.connect(rabbitmq_url) as broker:
        broker.declare(q)
        broker.producer().publish(q, b"x")
    out = subprocess.run(
        [sys.executable, "-m", "workq.cli", "run", "footapp:app", "--url", rabbitmq_url],
        cwd=tmp_path,
        env=same_workq(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "workq: running footapp:app" in out.stderr
    assert loaded(json.loads(report.read_text())) == []
