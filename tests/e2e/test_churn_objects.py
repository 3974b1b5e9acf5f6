"""Join, publish, subscribe, mute and leave, over and over: once everyone has gone the node
holds no more objects than before (peer connections, transports, producers, consumers,
participants, sessions, ICE and DTLS state), and no more tasks.

The soak (bench/soak_bench.py) watches the same over an hour from outside the process;
this counts live objects by type inside it, after a garbage collection."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiortc import VideoStreamTrack

from client.client import ParleyClient
from conference.config import RoomConfig
from conference.ids import ParticipantId, RoomName, TrackId
from sfu.config import SfuConfig
from signaling import protocol
from signaling.config import SignalingConfig
from tests.conftest import NodeHarness, StartNode, make_config, token

WATCHED = ("sfu.", "conference.", "signaling.", "aiortc.", "aioice.")
"""Modules whose live objects are counted (the clients' aiortc objects included: they
are closed too, and must go as well)."""
CYCLES = 12
LINGER = 20.0
"""Seconds objects may outlive their owners (the longest STUN transaction is 15.5 s)."""


@pytest.fixture
async def node(start_node: StartNode) -> NodeHarness:
    return await start_node(make_config(
        sfu=SfuConfig(ice_addresses=("127.0.0.1",)),
        rooms=RoomConfig(empty_timeout=0.2),
        signaling=SignalingConfig(resume_window=0.5)))


@pytest.fixture
async def clients() -> AsyncIterator[list[ParleyClient]]:
    made: list[ParleyClient] = []
    yield made
    for client in made:
        await client.close()


def census() -> Counter[str]:
    protocol._last_encoded = None  # the codec's one-entry cache keeps the last event
    gc.collect()
    out: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        module = getattr(kind, "__module__", "")
        if isinstance(module, str) and module.startswith(WATCHED):
            out[f"{module}.{kind.__qualname__}"] += 1
    return out


async def no_growth(before: Counter[str], timeout: float) -> dict[str, int]:
    """What has more live objects than ``before``, once it stops shrinking or after
    ``timeout`` seconds (timers such as STUN retransmissions hold objects a while)."""
    grown: dict[str, int] = {}
    for _ in range(int(timeout)):
        after = census()
        grown = {name: n - before[name] for name, n in after.items() if n > before[name]}
        if not grown:
            break
        await asyncio.sleep(1.0)
    return grown


async def settled(node: NodeHarness, timeout: float = 10.0) -> None:
    """Until the room is closed and its closing tasks are done."""
    async with asyncio.timeout(timeout):
        while node.node.rooms.rooms or node.node.connections:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)


async def cycle(node: NodeHarness, clients: list[ParleyClient], n: int) -> None:
    url = node.url("/")
    pub = ParleyClient(url, token("churn", f"pub-{n}"), decode=False, reconnect=False)
    sub = ParleyClient(url, token("churn", f"sub-{n}", role="listener"), decode=False,
                       reconnect=False)
    clients += [pub, sub]
    await pub.connect()
    [info] = await pub.publish(VideoStreamTrack(), sources=["camera"])
    await sub.connect()
    remote = await sub.next_track(timeout=10.0)
    assert remote.track_id == info["id"]
    for muted in (True, False):
        await pub.request({"type": "mute-track", "track": info["id"], "muted": muted})
    if n % 2:
        await sub.leave()
        await pub.leave()
    else:  # dropped sockets: held for the resume window, then gone
        await sub.close()
        await pub.close()
    clients[:] = [c for c in clients if c not in (pub, sub)]  # to count what the node keeps


@pytest.mark.timeout(120)
async def test_churn_leaves_no_objects_or_tasks_behind(
        node: NodeHarness, clients: list[ParleyClient], caplog: pytest.LogCaptureFixture) -> None:
    # A captured log record keeps its exception's traceback, and with it the objects of
    # every frame, for the test report: none is made here.
    caplog.set_level(logging.CRITICAL + 1)
    await cycle(node, clients, 0)  # the first of everything fills caches once
    await settled(node)
    before, tasks_before = census(), len(asyncio.all_tasks())
    for n in range(1, CYCLES + 1):
        await cycle(node, clients, n)
    await settled(node)
    grown = await no_growth(before, LINGER)
    assert not grown, sorted(grown.items())
    assert len(asyncio.all_tasks()) <= tasks_before, [t.get_coro() for t in asyncio.all_tasks()]


async def test_a_stall_reported_after_the_track_left_the_room_is_ignored(
        node: NodeHarness, clients: list[ParleyClient]) -> None:
    """The producer's monitor can report a stall between the track leaving the room and
    the producer closing; that report once raised out of the producer's close() and left
    the publish connection open (its socket and ICE task) for the life of the node."""
    pub = ParleyClient(node.url("/"), token("churn", "pub"), decode=False, reconnect=False)
    clients.append(pub)
    await pub.connect()
    [info] = await pub.publish(VideoStreamTrack(), sources=["camera"])
    room = node.node.rooms.rooms[RoomName("churn")]
    assert room.media is not None
    pid = ParticipantId(pub.participant_id)
    producer = room.media.members[pid].producers[TrackId(info["id"])]
    room.remove_track(pid, TrackId(info["id"]))
    assert producer.on_stalled is not None
    producer.on_stalled(producer, True)  # raised ConferenceError(unknown_track)
    await pub.leave()
