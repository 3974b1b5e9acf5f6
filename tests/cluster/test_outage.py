"""Redis going away: running meetings go on, joins that need Redis fail with a code, and the
node re-registers (and re-claims its rooms) when Redis comes back."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import StartNode, token


async def test_a_redis_outage_fails_new_rooms_with_a_code_and_the_node_recovers(
        start_node: StartNode, redis_server: RedisServer) -> None:
    h = await start_node(cluster_config(redis_server))
    await eventually(lambda: h.node.cluster_reachable)
    alice = await h.joined("r1", "alice")
    bob = await h.joined("r1", "bob")

    redis_server.stop()
    await eventually(lambda: not h.node.cluster_reachable, timeout=5)
    assert (await h.http.get(h.url("/readyz"))).status == 503

    # The running meeting does not notice.
    await alice.send(type="data", payload="still here")
    assert (await bob.expect("data"))["payload"] == "still here"
    await bob.send(type="ping", id="p")
    assert (await bob.expect("pong"))["id"] == "p"
    # A room this node already holds takes joins; a new room needs Redis.
    carol = await h.joined("r1", "carol")
    newcomer = await h.connect()
    await newcomer.send(type="join", token=token("r2", "dave"), media=False)
    error = await newcomer.expect("error", timeout=10)
    assert error["code"] == "cluster_unavailable"
    metrics = await (await h.http.get(h.url("/metrics"))).text()
    assert "parley_cluster_redis_up 0.0" in metrics
    assert 'parley_cluster_redis_errors_total{op="heartbeat"}' in metrics
    await asyncio.sleep(1.0)  # a few seconds of outage in all

    redis_server.start()  # same port, empty: the node must put everything back
    await eventually(lambda: h.node.cluster_reachable, timeout=5)
    assert (await h.http.get(h.url("/readyz"))).status == 200
    check = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await check.exists(f"parley:node:{h.node.id}")
        assert await check.get("parley:room:r1") == h.node.id  # re-claimed
        dave = await h.joined("r2", "dave")
        await dave.send(type="ping", id="q")
        assert (await dave.expect("pong"))["id"] == "q"
    finally:
        await check.aclose()
    await carol.send(type="ping", id="c")
    assert (await carol.expect("pong"))["id"] == "c"
