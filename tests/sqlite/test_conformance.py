"""The conformance suite on sqlite://, sync and async."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance

pytestmark = pytest.mark.sqlite


class TestSqliteSync(Conformance):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestSqliteAsync(AsyncConformance):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url
