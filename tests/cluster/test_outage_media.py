"""Redis trouble during a meeting with media: media flows on, joins that need Redis fail
with a code, the relayed sessions ride the outage out; and a node that was cut off long
enough for its room to be claimed elsewhere hands it over."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from client.client import ParleyClient
from client.media import EncodedTrack, encode_video
from conference.cluster.config import ClusterConfig
from conference.ids import RoomName
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.cluster.test_relay import own
from tests.cluster.test_relay_process import FAST_ENV, node_id, serve_argv
from tests.conftest import Client, StartNode, token
from tests.media_helpers import LOOPBACK_SFU
from tests.signaling.test_cli import clean_env, free_port, running

OUTAGE = 10.0


async def _frame_times(client: ParleyClient, publisher: str, times: list[float],
                       stop: asyncio.Event) -> None:
    """When the count of the publisher's video frames went up, sampled every 50 ms."""
    last = -1
    while not stop.is_set():
        count = sum(client.frame_counts.get(r.mid, 0) for r in list(client.remote.values())
                    if r.participant == publisher and r.kind == "video")
        if count > last:
            times.append(time.perf_counter())
            last = count
        await asyncio.sleep(0.05)


async def test_media_flows_through_a_redis_outage_and_joins_get_cluster_unavailable(
        start_node: StartNode, redis_server: RedisServer) -> None:
    config = cluster_config(redis_server, ClusterConfig(), sfu=LOOPBACK_SFU)
    a, b = await start_node(config), await start_node(config)
    await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable, timeout=8)
    await own(a, "m")
    clip = encode_video(seconds=1.0, width=160, height=120, bitrate=150_000)
    pub = ParleyClient(b.url("/"), token("m", "pub"), decode=False)  # relayed, from b
    viewer = ParleyClient(b.url("/"), token("m", "view"), decode=False)
    times: list[float] = []
    stop = asyncio.Event()
    try:
        await pub.connect()
        await viewer.connect()
        await pub.publish(EncodedTrack(clip))
        sampler = asyncio.get_running_loop().create_task(
            _frame_times(viewer, pub.participant_id, times, stop))
        await eventually(lambda: len(times) > 10, timeout=20)

        redis_server.stop()
        stopped = time.perf_counter()
        await asyncio.sleep(2.0)
        newcomer = await b.connect()  # b does not hold the room: placing it needs Redis
        await newcomer.send(type="join", token=token("m", "late"), media=False)
        assert (await newcomer.expect("error", timeout=10))["code"] == "cluster_unavailable"
        await asyncio.sleep(OUTAGE - (time.perf_counter() - stopped))
        redis_server.start()
        await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable,
                         timeout=10)
        await asyncio.sleep(3.0)
        stop.set()
        await sampler
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        print(f"frames sampled {len(times)}, largest gap {max(gaps):.2f} s")
        assert times[0] < stopped and times[-1] > stopped + OUTAGE + 2
        assert max(gaps) < 1.0
        assert pub.reconnects == 0 and viewer.reconnects == 0
        assert a.node.rooms.get(RoomName("m")) is not None
        late = await b.joined("m", "late")  # recovered: relayed joins work again
        await late.send(type="ping", id="p")
        assert (await late.expect("pong"))["id"] == "p"
    finally:
        stop.set()
        await pub.close()
        await viewer.close()


async def test_a_node_cut_off_past_node_ttl_hands_its_room_to_the_new_owner(
        tmp_path: Path, redis_server: RedisServer, redis: Redis) -> None:
    ports = free_port(), free_port()
    env = clean_env(**FAST_ENV)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running(tmp_path / "a", serve_argv(ports[0], redis_server.url), ports[0],
                       env=env) as a, \
            running(tmp_path / "b", serve_argv(ports[1], redis_server.url), ports[1],
                    env=env) as b, \
            aiohttp.ClientSession() as http:
        a_id, b_id = await node_id(http, a.url("")), await node_id(http, b.url(""))
        await redis.set("parley:room:r1", a_id)
        alice = Client(await http.ws_connect(a.url("/rtc")))
        assert (await alice.join(token("r1", "alice")))["server"]["node"] == a_id

        os.killpg(a.proc.pid, signal.SIGSTOP)  # a hangs longer than node_ttl (2 s)
        try:
            await asyncio.sleep(3.0)
            bob = Client(await http.ws_connect(b.url("/rtc")))
            joined = await bob.join(token("r1", "bob"))
            assert joined["server"]["node"] == b_id  # the room has a new owner
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)
        message = await alice.expect("reconnect", timeout=5)
        assert message["reason"] == "room_moved"
        assert (await alice.closed()).data == 4010
        assert await redis.get("parley:room:r1") == b_id
        async with http.get(a.url("/metrics")) as resp:
            assert "parley_cluster_claim_conflicts_total 1.0" in await resp.text()
        # alice reconnects through a and lands in the one room, on b, with bob
        again = Client(await http.ws_connect(a.url("/rtc")))
        rejoined = await again.join(token("r1", "alice"))
        assert rejoined["server"]["node"] == b_id
        assert [p["identity"] for p in rejoined["participants"]] == ["bob"]
