"""Every workq module imports on its own and says what it offers: ``__all__`` names what
exists, once, and lists every public class and function the module defines."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from types import ModuleType

import pytest

import workq

MODULES = ["workq", *(m.name for m in pkgutil.walk_packages(workq.__path__, "workq."))]

# Edited on the branch that reworks the backends' retry loops: their __all__ is settled
# once that branch is in (strict, so this list fails when it is no longer needed).
PENDING: dict[str, str] = {}


def defined_here(module: ModuleType) -> list[str]:
    """The public classes and functions ``module`` defines (not those it imports)."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    ]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=PENDING[m]))
        if m in PENDING
        else m
        for m in MODULES
    ],
)
def test_all_names_what_the_module_offers(name: str) -> None:
    module = importlib.import_module(name)
    public = defined_here(module)
    if not hasattr(module, "__all__"):
        # Only a module that defines nothing public (an empty package) may go without.
        assert not public, f"{name} has no __all__ but defines {public}"
        return
    listed = list(module.__all__)
    assert len(listed) == len(set(listed)), f"{name}.__all__ repeats a name"
    with warnings.catch_warnings():
        # workq.messages offers its names with a DeprecationWarning.
        warnings.simplefilter("ignore", DeprecationWarning)
        missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    unlisted = [n for n in public if n not in listed]
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_the_walk_finds_the_core_and_every_backend() -> None:
    for name in ("workq.driver", "workq.codec", "workq.testing.plugin"):
        assert name in MODULES
    for backend in ("memory", "sqlite", "rabbitmq", "sqs", "kafka"):
        assert f"workq.backends.{backend}.driver" in MODULES
