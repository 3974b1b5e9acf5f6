"""The room meters app data with the sender's budget, and counts what it drops."""

from __future__ import annotations

from dataclasses import replace

from conference.events import DataReceived
from tests.conference.test_rooms import Sink, manager, request


async def test_data_over_the_senders_budget_is_dropped_and_counted() -> None:
    rooms = manager()
    alice_sink, bob_sink = Sink(), Sink()
    room, alice = await rooms.join(replace(request("r1", "alice", alice_sink),
                                           data_rate=0.001, data_burst=3))
    await rooms.join(request("r1", "bob", bob_sink))
    results = [room.send_data(alice.id, i) for i in range(10)]
    assert results == [1, 1, 1] + [None] * 7
    assert sum(isinstance(e, DataReceived) for e in bob_sink.events) == 3
    registry = rooms._metrics.registry
    assert registry.get_sample_value("parley_conference_data_dropped_total") == 7


async def test_a_participant_without_a_budget_is_not_limited() -> None:
    rooms = manager()
    room, alice = await rooms.join(request("r1", "alice", Sink()))
    await rooms.join(request("r1", "bob", Sink()))
    assert all(room.send_data(alice.id, i) == 1 for i in range(200))
