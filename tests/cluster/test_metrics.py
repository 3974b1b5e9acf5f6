"""Cluster metrics: rooms owned, the node's state, Redis health; labels from fixed sets."""

from __future__ import annotations

import asyncio

from tests.cluster.conftest import FAST, cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import StartNode


async def test_metrics_show_rooms_owned_node_state_and_redis_health(
        start_node: StartNode, redis_server: RedisServer) -> None:
    h = await start_node(cluster_config(redis_server))
    await eventually(lambda: h.node.cluster_reachable)
    await h.joined("r1", "alice")
    await h.joined("r2", "bob")
    await asyncio.sleep(FAST.heartbeat_interval * 2)
    text = await (await h.http.get(h.url("/metrics"))).text()
    assert "parley_cluster_rooms_owned 2.0" in text
    assert 'parley_cluster_node_state{state="serving"} 1.0' in text
    assert 'parley_cluster_node_state{state="draining"} 0.0' in text
    assert "parley_cluster_redis_up 1.0" in text
    assert 'parley_cluster_redis_errors_total{op="claim"} 0.0' in text
    assert "r1" not in text  # no room names as label values
    await h.node.drain(0.2)
    text = await (await h.http.get(h.url("/metrics"))).text()
    assert 'parley_cluster_node_state{state="draining"} 1.0' in text


async def test_a_single_node_has_no_cluster_metrics(start_node: StartNode) -> None:
    h = await start_node()
    text = await (await h.http.get(h.url("/metrics"))).text()
    assert "parley_cluster_" not in text
    assert (await (await h.http.get(h.url("/readyz"))).json()) == {"ready": True,
                                                                   "node": h.node.id}
