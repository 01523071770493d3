"""The project's own files: one distribution name, one version, every public name documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import workq
import workq.aio

ROOT = Path(__file__).resolve().parents[2]
DIST = "pyworkq"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCS = "\n".join(p.read_text() for p in sorted((ROOT / "docs").rglob("*.md")))


def test_distribution_name_is_ours_and_the_version_has_one_home() -> None:
    project = PYPROJECT["project"]
    # `workq` on PyPI is somebody else's project: installing it must never be suggested.
    assert project["name"] == DIST
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/workq/__init__.py"
    init = (ROOT / "src/workq/__init__.py").read_text()
    assert re.search(rf'^__version__ = "{re.escape(workq.__version__)}"$', init, re.MULTILINE)


def test_every_install_hint_names_the_distribution() -> None:
    wrong = re.compile(r"""pip install\s+(-\S+\s+)*['"]?workq\b""")
    places = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py")]
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in places
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if wrong.search(line)
    ]
    assert not offenders, f"install {DIST}, not workq:\n" + "\n".join(offenders)
    assert f"pip install {DIST}" in (ROOT / "README.md").read_text()


def test_self_referencing_extras_use_the_distribution_name() -> None:
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        for requirement in requirements:
            assert not requirement.startswith("workq["), f"extra {extra}: {requirement}"


@pytest.mark.parametrize(
    "name",
    [f"workq.{n}" for n in workq.__all__ if n != "aio"]
    + [f"workq.aio.{n}" for n in workq.aio.__all__],
)
def test_every_public_name_is_in_the_api_reference(name: str) -> None:
    assert re.search(rf"^::: {re.escape(name)}$", DOCS, re.MULTILINE), (
        f"{name} is public but not in the API reference: add `::: {name}` to a page "
        "under docs/reference/ (or docs/reference.md)"
    )


@pytest.mark.parametrize("fixture", ["rabbitmq_url", "sqs_url", "kafka_url"])
def test_every_fixture_is_in_the_testing_reference(fixture: str) -> None:
    from workq.testing import plugin

    assert callable(getattr(plugin, fixture))
    testing = (ROOT / "docs/testing.md").read_text()
    assert f"- {fixture}" in testing and f"`{fixture}`" in testing


def _public_docstrings() -> list[tuple[str, str]]:
    """The docstrings the API reference renders: public names, their members, modules."""
    import importlib
    import inspect

    modules = [
        "workq",
        "workq.aio",
        "workq.settings",
        "workq.testing.plugin",
        "workq.testing.brokers",
        "workq.testing.conformance",
    ]
    found: list[tuple[str, str]] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        if module_name.startswith("workq.testing"):  # the pages show these modules' text
            found.append((module_name, inspect.getdoc(module) or ""))
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or getattr(obj, "__module__", "").split(".")[0] != "workq":
                continue
            found.append((f"{module_name}.{name}", inspect.getdoc(obj) or ""))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    doc = getattr(member, "__doc__", None)
                    if not attr.startswith("_") and isinstance(doc, str):
                        found.append((f"{module_name}.{name}.{attr}", inspect.cleandoc(doc)))
    return found


def test_docstring_examples_render_as_code() -> None:
    # The API reference renders ``>>>`` as code only inside an Examples section (google
    # style); elsewhere Markdown makes it nested quotes. Examples that cannot run are
    # fenced ```python blocks, not doctests marked +SKIP.
    offenders = []
    for where, doc in _public_docstrings():
        in_examples = False
        for line in doc.splitlines():
            if line and not line[0].isspace():
                in_examples = line.rstrip() in ("Example:", "Examples:")
            if "doctest: +SKIP" in line or (line.lstrip().startswith(">>>") and not in_examples):
                offenders.append(f"{where}: {line.strip()}")
                break
    assert not offenders, "examples that would not render as code:\n" + "\n".join(offenders)
