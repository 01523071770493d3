"""A real SQS-protocol server for tests: moto's server on a free loopback port.

``start_local`` runs moto's server (``python -m workq.testing.brokers.moto_server``, which
fixes one way moto differs from AWS) (installing ``moto[server]`` into this
interpreter first when it is missing); ``start_container`` runs the moto image through
testcontainers where a Docker engine answers. boto3 needs credentials and a region even
for a local server: dummy ones are set in the environment unless some are already there.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import BrokerProcess, NotAvailable, free_port, wait_port

__all__ = ["start_container", "start_local", "url_for"]

REGION = "us-east-1"
IMAGE = "motoserver/moto:latest"


def url_for(endpoint: str, region: str = REGION) -> str:
    """The workq URL of an SQS endpoint."""
    return f"sqs://{region}?endpoint_url={endpoint}"


def _dummy_credentials() -> None:
    # Only defaults: a developer's real chain (profile, role) must not be overridden.
    if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
        os.environ["AWS_ACCESS_KEY_ID"] = "testing"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


def _ensure_moto() -> None:
    if importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask"):
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "moto[server]>=5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    importlib.invalidate_caches()
    if done.returncode != 0 or importlib.util.find_spec("moto") is None:
        raise NotAvailable(
            f"moto[server] is not installed and `{' '.join(cmd[1:])}` failed: "
            f"{done.stderr.strip()[-500:]}"
        )


def start_local(workdir: Path, port: int | None = None) -> BrokerProcess:
    """Start a moto server in ``workdir`` on ``port`` (a free 127.0.0.1 port by default).

    A fixed ``port`` lets a test restart the endpoint where clients expect it.
    """
    _ensure_moto()
    _dummy_credentials()
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "moto.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workq.testing.brokers.moto_server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()

    try:
        wait_port(port, timeout=30)
    except TimeoutError as exc:
        stop()
        tail = log_path.read_text(errors="replace")[-1000:]
        raise NotAvailable(
            f"moto server did not listen on port {port}: {exc}; log: {tail}"
        ) from None
    endpoint = f"http://127.0.0.1:{port}"
    return BrokerProcess(
        url=url_for(endpoint), stop_fn=stop, info={"endpoint": endpoint, "pid": proc.pid}
    )


def start_container() -> BrokerProcess:
    """Start moto in a container through testcontainers (needs a Docker engine)."""
    try:
        containers: Any = importlib.import_module("testcontainers.core.container")
    except ImportError as exc:
        raise NotAvailable(f"testcontainers is not installed ({exc})") from None
    _dummy_credentials()
    try:
        container = containers.DockerContainer(IMAGE).with_exposed_ports(5000)
        container.start()
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(5000))
        wait_port(port, timeout=60, host=host)
    except Exception as exc:  # docker missing or unreachable: say so, let the plugin decide
        raise NotAvailable(f"cannot run the {IMAGE} container: {exc}") from None
    endpoint = f"http://{host}:{port}"
    return BrokerProcess(url=url_for(endpoint), stop_fn=container.stop, info={"endpoint": endpoint})
