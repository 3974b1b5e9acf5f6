"""Fixtures shared by the SFU tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu.hooks import restrict_host_addresses


@pytest.fixture
async def loopback_ice() -> AsyncIterator[None]:
    """ICE gathers on 127.0.0.1 only, for the length of the test."""
    restrict_host_addresses(("127.0.0.1",))
    try:
        yield
    finally:
        restrict_host_addresses(())
