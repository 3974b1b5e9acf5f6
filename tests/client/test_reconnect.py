"""The Python client reconnects by itself and resumes its session."""

from __future__ import annotations

import asyncio

from aiortc import VideoStreamTrack

from client.client import ParleyClient
from tests.conftest import StartNode, token
from tests.e2e.browser import STEP, TcpRelay, loopback_node


async def events_until(client: ParleyClient, mtype: str, timeout: float = STEP) -> list[dict]:
    """Every event up to and including the next one of ``mtype``."""
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["type"] != mtype:
            seen.append(await client.events.get())
    return seen


async def test_the_client_resumes_after_its_socket_is_cut_and_publishes_again(
        start_node: StartNode) -> None:
    h = await loopback_node(start_node)
    relay = TcpRelay("127.0.0.1", h.server.port)
    await relay.start()
    speaker = ParleyClient(relay.url, token("r1", "speaker"))
    watcher = ParleyClient(h.url("/"), token("r1", "watcher", role="listener"))
    try:
        await speaker.connect()
        await watcher.connect()
        first = await speaker.publish(VideoStreamTrack(), sources=["camera"])
        remote = await watcher.next_track(timeout=STEP)
        assert remote.participant == speaker.participant_id
        pid = speaker.participant_id

        relay.cut()
        held = await events_until(watcher, "participant-updated")
        assert held[-1]["participant"]["reconnecting"] is True
        joined = await asyncio.wait_for(speaker.rejoined.get(), STEP)
        assert joined["resumed"] is True and joined["participant"]["id"] == pid
        assert speaker.reconnects == 1
        back = await events_until(watcher, "participant-updated")
        assert back[-1]["participant"]["reconnecting"] is False
        # republished: the watcher receives the speaker's video again, as a new track
        again = await events_until(watcher, "track-published")
        assert again[-1]["track"]["participant"] == pid
        assert again[-1]["track"]["id"] != first[0]["id"]
        seen = held + back + again
        assert not [e for e in seen if e["type"] in ("participant-left", "participant-joined")]
        assert len(h.node.rooms.get("r1")) == 2
        # frames flow again: a newcomer decodes the republished video
        late = ParleyClient(h.url("/"), token("r1", "late", role="listener"))
        await late.connect()
        async with asyncio.timeout(STEP):
            track = await late.next_track(timeout=STEP)
            assert track.participant == pid
            await track.track.recv()
        await late.close()
    finally:
        await speaker.close()
        await watcher.close()
        await relay.close()


async def test_an_offer_for_a_subscribe_connection_that_failed_meanwhile_is_dropped_quietly(
        start_node: StartNode) -> None:
    """The node renegotiates while the subscribe connection fails: the answer being made
    on the failed connection meets it closed. That is no error of the client's (the node
    sends a fresh offer for a new connection), and it must not surface as one."""
    h = await loopback_node(start_node)
    speaker = ParleyClient(h.url("/"), token("r1", "speaker"))
    watcher = ParleyClient(h.url("/"), token("r1", "watcher", role="listener"))
    try:
        await speaker.connect()
        await watcher.connect()
        await speaker.publish(VideoStreamTrack(), sources=["camera"])
        await watcher.next_track(timeout=STEP)
        offers = [e for e in await events_until(watcher, "offer") if e["type"] == "offer"]
        before = set(watcher._tasks)
        watcher._on_event(offers[-1])  # a renegotiation arrives
        answering = (set(watcher._tasks) - before).pop()
        await asyncio.sleep(0)  # the answer is under way on the connection...
        watcher._on_event({"type": "connection-failed", "target": "subscriber",
                           "reason": "consent_expired"})  # ...and the connection fails
        await asyncio.wait_for(answering, STEP)  # raises if the client took it as an error
        assert watcher.subscriber is None
    finally:
        await watcher.close()
        await speaker.close()
