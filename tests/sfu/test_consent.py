"""Consent freshness (RFC 7675) for the SFU's ICE connections: sfu/hooks_consent.py's loop in
place of aioice's, which gives up on a node that reads its answers late."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from typing import Any

import aioice
import aioice.ice
import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu import hooks, hooks_consent
from sfu.hooks_consent import ConsentPolicy, adopt_consent, fresh_consent, keep_consent_fresh
from sfu.transport import _new_pc

pytestmark = pytest.mark.usefixtures("loopback_ice")

FAST = ConsentPolicy(interval=0.2, timeout=1.5, retransmissions=4)


def test_aioice_is_the_version_whose_consent_loop_is_replaced() -> None:
    assert aioice.__version__ == hooks.AIOICE_VERSION, (
        "aioice changed: re-verify how Connection.connect starts query_consent and "
        "Connection.close cancels it, then update the pin")
    hooks_consent.check_consent_hook_points()
    connect = inspect.getsource(aioice.ice.Connection.connect)
    assert "self._query_consent_task = asyncio.create_task(self.query_consent())" in connect
    close = inspect.getsource(aioice.ice.Connection.close)
    assert "self._query_consent_task.cancel()" in close
    assert close.index("self._closing = True") < close.index("_query_consent_task")
    # The flaw the hook exists for; once aioice retransmits, reconsider the hook.
    assert "retransmissions=0" in inspect.getsource(aioice.ice.Connection.query_consent)
    assert aioice.ice.CONSENT_FAILURES == 6


async def _pair(node_policy: ConsentPolicy | None) -> tuple[Any, Any]:
    """A node-side connection (with ``node_policy``'s loop, else aioice's) and a client,
    connected."""
    node, client = await prepared_pair(node_policy)
    await asyncio.gather(node.connect(), client.connect())
    return node, client


async def prepared_pair(node_policy: ConsentPolicy | None) -> tuple[Any, Any]:
    """The same, ready to connect."""
    node = aioice.ice.Connection(ice_controlling=False)
    client = aioice.ice.Connection(ice_controlling=True)
    if node_policy is not None:
        adopt_consent(node, node_policy)
    await asyncio.gather(node.gather_candidates(), client.gather_candidates())
    for one, other in ((node, client), (client, node)):
        for candidate in other.local_candidates:
            await one.add_remote_candidate(candidate)
        await one.add_remote_candidate(None)
        one.remote_username = other.local_username
        one.remote_password = other.local_password
    return node, client


def _answer_late(connection: Any, delay: float | None) -> None:
    """``connection`` answers every check ``delay`` seconds late (None: never)."""
    loop = asyncio.get_running_loop()
    for protocol in connection._protocols:
        original = protocol.send_stun

        def send_stun(message: stun.Message, addr: tuple[str, int],
                      original: Any = original) -> None:
            if message.message_class != stun.Class.RESPONSE:
                original(message, addr)
            elif delay is not None:
                loop.call_later(delay, original, message, addr)

        protocol.send_stun = send_stun


def _consent_running(connection: Any) -> bool:
    task = connection._query_consent_task
    return task is not None and not task.done()


@pytest.fixture
def fast_aioice_consent() -> Iterator[None]:
    """aioice's own loop, checking every 0.16-0.24 s instead of 4-6 s."""
    interval = aioice.ice.CONSENT_INTERVAL
    aioice.ice.CONSENT_INTERVAL = 0.2  # type: ignore[assignment]
    try:
        yield
    finally:
        aioice.ice.CONSENT_INTERVAL = interval


async def test_answers_later_than_half_a_second_keep_consent() -> None:
    node, client = await _pair(FAST)
    try:
        _answer_late(client, 0.8)
        await asyncio.sleep(3 * FAST.timeout)
        assert _consent_running(node)
        assert node._nominated, "the node closed its connection"
    finally:
        await asyncio.gather(node.close(), client.close())


@pytest.mark.usefixtures("fast_aioice_consent")
async def test_aioice_s_own_loop_gives_up_on_the_same_late_answers() -> None:
    node, client = await _pair(None)
    try:
        _answer_late(client, 0.8)
        deadline = time.monotonic() + 10 * 0.24 + 2
        while _consent_running(node) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not node._nominated, "aioice now tolerates late answers: reconsider the hook"
    finally:
        await asyncio.gather(node.close(), client.close())


async def test_consent_is_lost_when_no_check_succeeds_for_the_timeout() -> None:
    policy = ConsentPolicy(interval=0.2, timeout=1.0, retransmissions=1)
    node, client = await _pair(policy)
    try:
        _answer_late(client, None)
        started = time.monotonic()
        while _consent_running(node) and time.monotonic() - started < 6:
            await asyncio.sleep(0.05)
        lost_after = time.monotonic() - started
        assert not node._nominated, "the connection outlived its consent"
        # Lost once a check (sent at 0 and 0.5 s, given up at 1.5 s) fails after 1 s.
        assert policy.timeout <= lost_after < policy.timeout + 2.0
    finally:
        await asyncio.gather(node.close(), client.close())


async def test_closing_the_connection_ends_the_loop_and_its_checks() -> None:
    node, client = await _pair(FAST)
    _answer_late(client, 5.0)  # checks stay in flight
    await asyncio.sleep(0.6)
    task = node._query_consent_task
    await node.close()
    await client.close()
    assert task is not None and task.done()
    assert not [t for t in asyncio.all_tasks() if "fresh_consent" in repr(t.get_coro())]


async def close_while_connecting(node: Any, client: Any) -> None:
    """Connect the two, with ``node`` closed after its checks succeed and before its
    ``connect()`` goes on: the one moment ``close()`` finds no consent loop to cancel
    (a peer connection closed early does that)."""
    finished = node._check_list_state.get

    async def finished_then_closed() -> Any:
        result = await finished()
        await node.close()
        return result

    node._check_list_state.get = finished_then_closed
    await asyncio.gather(node.connect(), client.connect())


async def test_a_connection_closed_while_it_connects_keeps_no_consent_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    node, client = await prepared_pair(FAST)
    await close_while_connecting(node, client)
    await asyncio.sleep(0.1)  # well within FAST's window (1.5 s)
    try:
        task = node._query_consent_task
        assert task is None or task.done(), "a consent loop outlives its closed connection"
    finally:
        await client.close()
    await asyncio.sleep(FAST.timeout + 0.5)
    assert "consent lost" not in caplog.text


async def test_every_ice_connection_of_the_sfu_s_peer_connections_uses_the_loop() -> None:
    node = _new_pc()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.createDataChannel("x")
    try:
        await client.setLocalDescription(await client.createOffer())
        await node.setRemoteDescription(client.localDescription)
        await node.setLocalDescription(await node.createAnswer())
        await client.setRemoteDescription(node.localDescription)
        for _ in range(100):
            if node.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        assert node.sctp is not None
        connection = node.sctp.transport.transport.iceGatherer._connection
        task = connection._query_consent_task
        assert task is not None and task.get_coro().__qualname__ == fresh_consent.__qualname__
        client_connection = client.sctp.transport.transport.iceGatherer._connection
        assert client_connection._query_consent_task.get_coro().__qualname__ == (
            "Connection.query_consent")
    finally:
        await asyncio.gather(node.close(), client.close())


async def test_a_peer_connection_is_hooked_only_through_its_own_descriptions() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    keep_consent_fresh(pc)
    assert pc.setRemoteDescription.__qualname__.endswith("apply")
    assert RTCPeerConnection.setRemoteDescription.__qualname__ == (
        "RTCPeerConnection.setRemoteDescription")
    await pc.close()
