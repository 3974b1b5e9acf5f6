"""The bus: frames between two nodes over a real redis-server."""

from __future__ import annotations

import asyncio

from conference.cluster.bus import Bus, Frame
from conference.cluster.client import RedisClient
from conference.cluster.config import RedisConfig
from conference.ids import NodeId
from tests.cluster.redisproc import RedisServer


async def _bus(server: RedisServer, node: str, inbox: list[Frame]) -> tuple[Bus, RedisClient]:
    client = RedisClient(RedisConfig(url=server.url, timeout=0.5, retry_for=1.0))
    bus = Bus(client, NodeId(node))
    bus.set_handler(inbox.append)
    bus.start()
    await asyncio.wait_for(bus.subscribed.wait(), 5)
    return bus, client


async def _until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_frames_reach_the_other_node_in_the_order_they_were_sent(
        redis_server: RedisServer) -> None:
    got_a: list[Frame] = []
    got_b: list[Frame] = []
    a, ca = await _bus(redis_server, "A", got_a)
    b, cb = await _bus(redis_server, "B", got_b)
    try:
        for i in range(500):
            assert a.send(NodeId("B"), {"k": "n", "i": i})
        await _until(lambda: len(got_b) == 500)
        assert [f["i"] for f in got_b] == list(range(500))
        assert got_a == []  # nothing for A: each node reads its own inbox only
    finally:
        for bus, client in ((a, ca), (b, cb)):
            await bus.close()
            await bus.close()  # idempotent
            await client.close()
    assert not a.send(NodeId("B"), {"k": "late"})


async def test_the_inbox_subscribes_again_after_redis_restarts(
        redis_server: RedisServer) -> None:
    got: list[Frame] = []
    a, ca = await _bus(redis_server, "A", [])
    b, cb = await _bus(redis_server, "B", got)
    try:
        redis_server.stop()
        await _until(lambda: not b.subscribed.is_set())
        assert not b.subscribed.is_set()
        redis_server.start()
        await asyncio.wait_for(b.subscribed.wait(), 10)
        a.send(NodeId("B"), {"k": "after"})
        await _until(lambda: bool(got))
        assert got == [{"k": "after"}]
    finally:
        for bus, client in ((a, ca), (b, cb)):
            await bus.close()
            await client.close()
