"""Draining a node: clients are told, sockets close 1001, no new work is taken."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import Client, NodeHarness, token


async def told_and_closed(client: Client) -> dict:
    """The disconnect message, then a close frame with 1001 (going away)."""
    bye = await client.expect("disconnect")
    close = await client.closed()
    assert close.type is aiohttp.WSMsgType.CLOSE
    assert close.data == aiohttp.WSCloseCode.GOING_AWAY
    return bye


async def test_drain_tells_every_client_and_closes_with_going_away(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    bob = await node.joined("r1", "bob")
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, bye_alice, bye_bob = await asyncio.gather(
        node.node.drain(1.0), told_and_closed(alice), told_and_closed(bob))
    assert bye_alice["reason"] == bye_bob["reason"] == "server_shutdown"
    # every socket went, so drain did not sit out its grace period
    assert loop.time() - started < 1.0
    assert node.node.connections == set()
    assert node.node.rooms.participant_count() == 0


async def test_drain_also_closes_sockets_that_have_not_joined(node: NodeHarness) -> None:
    lurker = await node.connect()
    ping_id = await lurker.send(type="ping")
    assert (await lurker.expect("pong"))["id"] == ping_id
    assert len(node.node.connections) == 1  # registered without joining
    _, bye = await asyncio.gather(node.node.drain(1.0), told_and_closed(lurker))
    assert bye["reason"] == "server_shutdown"
    assert node.node.connections == set()


async def test_readyz_is_503_while_draining(node: NodeHarness) -> None:
    async with node.http.get(node.url("/readyz")) as resp:
        assert resp.status == 200
        assert (await resp.json())["ready"] is True
    await node.node.drain(1.0)
    async with node.http.get(node.url("/readyz")) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["ready"] is False and body["draining"] is True
    async with node.http.get(node.url("/healthz")) as resp:
        assert resp.status == 200  # alive, just not taking work


async def test_new_connections_get_503_while_draining(node: NodeHarness) -> None:
    await node.node.drain(1.0)
    async with node.http.get(node.url("/rtc")) as resp:
        assert resp.status == 503
        assert (await resp.json())["code"] == "node_draining"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await node.http.ws_connect(node.url("/rtc"))
    assert info.value.status == 503


async def test_second_drain_returns_at_once(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    await asyncio.gather(node.node.drain(1.0), told_and_closed(alice))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await node.node.drain(5.0)
    assert loop.time() - started < 0.1
    assert node.node.draining


async def test_join_on_an_open_socket_is_refused_after_drain_started(
    node: NodeHarness,
) -> None:
    early = await node.connect()
    await early.send(type="ping")
    await early.expect("pong")
    # a join racing with drain: the room manager's gate is closed, the socket still open
    node.node.rooms.draining = True
    await early.send(type="join", token=token("r1", "late"))
    error = await early.expect("error")
    assert error["code"] == "node_draining"
    assert node.node.rooms.rooms == {}
