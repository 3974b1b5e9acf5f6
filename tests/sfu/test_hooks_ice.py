"""A peer connection closed while it gathers ICE candidates leaves no socket open."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from client import hooks as client_hooks
from sfu import hooks_ice


def _connection(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection


async def _close_while_gathering() -> list[Any]:
    """Start gathering, close the connection before the binds are done; the protocols
    its ICE connection holds once gathering is over."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    gathering = asyncio.ensure_future(pc.setLocalDescription(await pc.createOffer()))
    for _ in range(3):  # into get_component_candidates, not through it
        await asyncio.sleep(0)
    connection = _connection(pc)
    assert connection._local_candidates_start and not connection._local_candidates_end
    await pc.close()
    await gathering
    return [p for p in connection._protocols if not p.transport.is_closing()]


@pytest.fixture
def original_gathering() -> Any:
    installed = aioice.ice.Connection.gather_candidates
    original = getattr(installed, "__wrapped__", installed)
    aioice.ice.Connection.gather_candidates = original  # type: ignore[method-assign]
    yield original
    aioice.ice.Connection.gather_candidates = installed  # type: ignore[method-assign]


async def test_unpatched_aioice_leaves_the_late_sockets_open(original_gathering: Any) -> None:
    """The hook point: if this starts failing, aioice fixed the race; drop the hooks."""
    left = await _close_while_gathering()
    assert left, "aioice now closes sockets gathered after close()"
    for protocol in left:
        protocol.transport.close()


@pytest.mark.parametrize("install", [hooks_ice.close_late_candidates,
                                     client_hooks.close_late_candidates],
                         ids=["node", "client"])
async def test_a_close_while_gathering_closes_what_was_gathered(
        original_gathering: Any, install: Any) -> None:
    install()
    install()  # idempotent
    assert getattr(aioice.ice.Connection.gather_candidates, hooks_ice.MARK)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        assert await _close_while_gathering() == []
        gc.collect()


async def test_gathering_on_a_live_connection_is_untouched(original_gathering: Any) -> None:
    hooks_ice.close_late_candidates()
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    assert "a=candidate" in pc.localDescription.sdp
    assert all(not p.transport.is_closing() for p in _connection(pc)._protocols)
    await pc.close()
