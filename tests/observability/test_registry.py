"""The open backend registry: a backend installed from outside workq, registered through
the ``workq.backends`` entry-point group, passes the conformance suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import workq
from workq import backends
from workq.testing.conformance import AsyncConformance, Conformance

OUTSIDE = Path(__file__).parent / "outside"


def install(site: Path) -> None:
    """Install ``wrapped_backend`` into ``site`` as pip would lay out a wheel: the module
    and a ``.dist-info`` with METADATA and entry_points.txt."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(OUTSIDE / "wrapped_backend.py", site / "wrapped_backend.py")
    info = site / "wrapped_backend-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wrapped-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[workq.backends]\nwrapped = wrapped_backend:BACKEND\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("site")
    install(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(path))
        yield path
    backends.backends(refresh=True)  # forget it again for later tests


def test_builtins_are_registered_like_any_backend() -> None:
    found = backends.backends()
    assert {"memory", "sqlite", "rabbitmq", "sqs", "kafka"} <= set(found)
    assert backends.by_scheme("amqps") is backends.RABBITMQ
    with pytest.raises(workq.ConfigurationError, match="unknown scheme 'nope'"):
        workq.connect("nope://x")
    with pytest.raises(workq.ConfigurationError, match="no workq backend named"):
        backends.by_name("nope")


def test_an_installed_backend_is_found_by_its_scheme(site: Path) -> None:
    assert backends.by_scheme("wrapped") is not None
    with workq.connect("wrapped://") as broker:
        assert broker.backend == "wrapped"
        broker.producer().publish("q", "hello")
        assert broker.queues() == ["q"]


def test_a_fresh_process_finds_it_through_the_entry_point(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "workq.cli", "publish", "q", "x", "--url", "wrapped://"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    code = (
        "import json, workq\n"
        "with workq.connect('wrapped://') as b:\n"
        "    b.producer().publish('jobs', 'x')\n"
        "    print(json.dumps([b.backend, b.queues()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["wrapped", ["jobs"]]


@pytest.mark.usefixtures("site")
class TestWrappedSync(Conformance):
    @pytest.fixture
    def url(self, site: Path) -> str:
        return "wrapped://"


@pytest.mark.usefixtures("site")
class TestWrappedAsync(AsyncConformance):
    @pytest.fixture
    def url(self, site: Path) -> str:
        return "wrapped://"
