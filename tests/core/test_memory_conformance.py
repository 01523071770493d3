"""The conformance suite on memory://, sync and async."""

from __future__ import annotations

import pytest

from workq.testing.conformance import AsyncConformance, Conformance


class TestMemorySync(Conformance):
    @pytest.fixture
    def url(self) -> str:
        return "memory://"


class TestMemoryAsync(AsyncConformance):
    @pytest.fixture
    def url(self) -> str:
        return "memory://"
