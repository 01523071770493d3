"""Fixtures of the SQLite backend tests: a fresh database file per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A ``sqlite://`` URL of a new file in this test's temporary directory."""
    return f"sqlite://{tmp_path / 'workq.db'}"
