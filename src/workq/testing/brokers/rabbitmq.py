"""Real RabbitMQ nodes for tests: isolated local nodes (single or a cluster), or a container.

A local node lives entirely in a work directory: its own ``HOME`` (and so its own Erlang
cookie), data, logs and config, on free loopback ports, so it never touches a node the
machine runs for itself. If ``rabbitmq-server`` is not installed and we are root, it is
installed with ``apt-get``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import BrokerProcess, NotAvailable, free_port, wait_port

__all__ = ["Cluster", "Node", "ensure_installed", "start_cluster", "start_container", "start_local"]

SBIN = Path("/usr/lib/rabbitmq/bin")
SERVER = SBIN / "rabbitmq-server"
CTL = SBIN / "rabbitmqctl"
EPMD_PORT = 4369


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


def ensure_installed() -> None:
    """Install ``rabbitmq-server`` with apt if missing; ``NotAvailable`` if we cannot."""
    if SERVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NotAvailable(
            f"{SERVER} is missing and this is not root with apt-get: "
            "install the rabbitmq-server package, or set WORKQ_TEST_RABBITMQ_URL"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        try:
            _run(["apt-get", "install", "-y", "rabbitmq-server"], env, timeout=600)
        except RuntimeError:
            # A fresh machine often has no package lists yet.
            _run(["apt-get", "update"], env, timeout=600)
            _run(["apt-get", "install", "-y", "rabbitmq-server"], env, timeout=600)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise NotAvailable(f"installing rabbitmq-server failed: {exc}") from exc
    if not SERVER.exists():
        raise NotAvailable(f"rabbitmq-server installed but {SERVER} is missing")


def _epmd_running() -> bool:
    try:
        wait_port(EPMD_PORT, 0.1)
        return True
    except TimeoutError:
        return False


@dataclass
class Node:
    """One RabbitMQ node in ``home`` (shared by the nodes of a cluster for the cookie)."""

    home: Path
    name: str
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    #: Lines added to the node's rabbitmq.conf (e.g. a TLS listener).
    extra_conf: str = ""
    #: Plugins to enable (``rabbitmq_management``...); none by default.
    plugins: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def base(self) -> Path:
        return self.home / self.name

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        base = self.base
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        }

    def ctl(self, *args: str, timeout: float = 90) -> str:
        return _run([str(CTL), "-n", self.nodename, *args], self.env(), timeout=timeout)

    def start(self) -> None:
        """Start the node (again, after ``kill``/``stop``) and wait until it is ready."""
        base = self.base
        for sub in ("mnesia", "log", "plugins-expand"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            "loopback_users = none\nlog.console = false\nlog.file.level = warning\n"
            + self.extra_conf
        )
        (base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (base / "rabbitmq-env.conf").write_text("")
        log = open(base / "log" / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [str(SERVER)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            self.ctl("wait", "--timeout", "90", str(base / "rabbit.pid"), timeout=120)
            wait_port(self.port, 30)
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            self.kill()
            tail = _tail(base / "log" / "stdout.log")
            raise NotAvailable(
                f"RabbitMQ node {self.nodename} did not start: {exc}; {tail}"
            ) from exc

    def _pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.base / "rabbit.pid").read_text().strip())
        return None

    def kill(self) -> None:
        """Kill the node at once (SIGKILL), as a crash would."""
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.base / "rabbit.pid").unlink()

    def stop(self) -> None:
        """Shut the node down cleanly, or kill it if that fails."""
        if self.process is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("shutdown", timeout=30)
        self.kill()


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "log tail: " + " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "no log"


def _home(workdir: Path) -> Path:
    home = Path(workdir)
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
    return home


def _stop_epmd(started: bool, home: Path) -> None:
    if started and shutil.which("epmd"):
        with contextlib.suppress(Exception):
            subprocess.run(
                ["epmd", "-kill"],
                capture_output=True,
                timeout=10,
                env={**os.environ, "HOME": str(home)},
            )


def start_local(
    workdir: Path, extra_conf: str = "", plugins: tuple[str, ...] = ()
) -> BrokerProcess:
    """A fresh single RabbitMQ node on free loopback ports in ``workdir``.

    ``extra_conf`` is added to its rabbitmq.conf (a TLS listener, say); ``plugins`` are
    enabled (``("rabbitmq_management",)`` with ``management.tcp.port = N`` in
    ``extra_conf`` for the HTTP API).
    """
    ensure_installed()
    home = _home(workdir)
    epmd_before = _epmd_running()
    node = Node(home, f"workq-{uuid.uuid4().hex[:8]}", extra_conf=extra_conf, plugins=plugins)
    node.start()

    def stop() -> None:
        node.stop()
        _stop_epmd(not epmd_before, home)

    return BrokerProcess(node.url, stop, info={"node": node})


@dataclass
class Cluster:
    """Nodes joined into one cluster; ``url`` lists every node (failover order)."""

    nodes: list[Node]
    epmd_started: bool = False

    @property
    def url(self) -> str:
        return "amqp://guest:guest@" + ",".join(n.host for n in self.nodes) + "/"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.nodes:
            _stop_epmd(self.epmd_started, self.nodes[0].home)


def start_cluster(workdir: Path, size: int = 3) -> Cluster:
    """``size`` local nodes joined into a cluster (same cookie, ``join_cluster``)."""
    ensure_installed()
    home = _home(workdir)
    cluster = Cluster([], epmd_started=not _epmd_running())
    prefix = f"workq-{uuid.uuid4().hex[:6]}"
    try:
        for i in range(size):
            node = Node(home, f"{prefix}-{i}")
            node.start()
            cluster.nodes.append(node)
            if i:
                node.ctl("stop_app")
                node.ctl("join_cluster", cluster.nodes[0].nodename)
                node.ctl("start_app")
    except Exception:
        cluster.stop()
        raise
    return cluster


def start_container() -> BrokerProcess:
    """A RabbitMQ container through testcontainers (needs a Docker engine)."""
    try:
        from testcontainers.rabbitmq import RabbitMqContainer
    except ImportError as exc:
        raise NotAvailable(f"testcontainers is not installed ({exc})") from exc
    try:
        container = RabbitMqContainer("rabbitmq:3.13")
        container.start()
    except Exception as exc:
        raise NotAvailable(f"could not start a RabbitMQ container: {exc}") from exc
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5672)
    return BrokerProcess(f"amqp://guest:guest@{host}:{port}/", container.stop)
