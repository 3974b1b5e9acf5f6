"""App data has one budget per participant, whichever way it is sent: the data channel and
the signalling socket together get no more through than the socket alone would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from signaling.config import SignalingConfig
from tests.conftest import StartNode
from tests.e2e.test_media_protocol import channel_open
from tests.media_helpers import media_node, peers

RATE, BURST = 10.0, 20
BUDGET = SignalingConfig(rate_limit_per_second=RATE, rate_limit_burst=BURST,
                         # the socket's own strikes would close the flooder first
                         rate_limit_strikes=100_000)


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_flooding_over_the_channel_and_the_socket_is_held_to_one_budget(
        start_node: StartNode) -> None:
    node = await media_node(start_node, signaling=BUDGET)
    async with peers(node, "room", "flooder", "viewer") as (flooder, viewer):
        for peer in (flooder, viewer):
            await channel_open(peer.client)
        channel = flooder.client._channel
        assert channel is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        for _ in range(40):  # 2 s, 200 messages a second: 100 on each path
            for _ in range(5):
                channel.send(json.dumps({"payload": sent, "topic": "flood"}))
                await flooder.client.send({"type": "data", "payload": sent + 1})
                sent += 2
            await asyncio.sleep(0.05)
        elapsed = loop.time() - started
        await asyncio.sleep(1.0)  # what was let through has arrived
        received = [d for d in drain(viewer.client.data)
                    if d.get("identity") == "flooder" or d.get("from") ==
                    flooder.client.participant_id]
        allowed = BURST + RATE * (elapsed + 0.5)
        assert BURST <= len(received) <= allowed, (len(received), sent, allowed)
        refusals = [e for e in drain(flooder.client.events)
                    if e["type"] == "error" and e["code"] == "rate_limited"]
        assert refusals  # the socket path is told; the channel path is dropped silently
        dropped = node.node.metrics_registry.get_sample_value(
            "parley_conference_data_dropped_total")
        assert dropped is not None and dropped > 0
