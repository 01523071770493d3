"""Fixtures shared by the SQS tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import workq


@pytest.fixture
def broker(sqs_url: str) -> Iterator[workq.Broker]:
    with workq.connect(sqs_url) as b:
        yield b


@pytest.fixture
def queue() -> str:
    """A fresh queue name, so tests never see each other's messages."""
    return f"s{uuid.uuid4().hex[:16]}"
