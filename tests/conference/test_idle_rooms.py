"""Empty rooms cost nothing: no task or timer per room once its media members left.

Real RoomManager, real SFU routers and subscribe connections (ICE on loopback);
the rooms linger for ``rooms.empty_timeout`` as on a busy node.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from conference.config import RoomConfig
from conference.events import LeaveReason
from conference.ids import Identity, NodeId, RoomName
from conference.manager import JoinRequest, RoomManager
from conference.media import RoomMedia
from conference.metrics import ConferenceMetrics
from conference.permissions import Role, expand_grants
from conference.registry import InMemoryRoomRegistry
from sfu.config import SfuConfig

ROOMS = 40


async def settle(baseline: int, timeout: float = 10.0) -> int:
    """Wait until the task count drops back to ``baseline``; return the count left."""
    async with asyncio.timeout(timeout):
        while len(asyncio.all_tasks()) > baseline:
            await asyncio.sleep(0.05)
    return len(asyncio.all_tasks())


async def test_emptied_rooms_keep_no_task_while_they_linger() -> None:
    manager = RoomManager(RoomConfig(empty_timeout=3600), InMemoryRoomRegistry(),
                          NodeId("ND_test"), ConferenceMetrics(CollectorRegistry()),
                          SfuConfig(ice_addresses=("127.0.0.1",)))
    try:
        baseline = len(asyncio.all_tasks())
        joined = []
        for i in range(ROOMS):
            name = RoomName(f"room-{i}")
            room, participant = await manager.join(JoinRequest(
                room=name, identity=Identity("alice"), name="", metadata="",
                grants=expand_grants(name, Role.SPEAKER, {}), sink=lambda event: None,
                media=True))
            joined.append((name, participant.id))
        # With members: every room runs its speaker and bandwidth loops.
        assert len(asyncio.all_tasks()) >= baseline + 2 * ROOMS
        for name, pid in joined:
            manager.leave(name, pid, LeaveReason.CLIENT_LEFT)
        assert await settle(baseline) == baseline
        assert len(manager.rooms) == ROOMS  # the rooms still linger, empty
        for room in manager.rooms.values():
            assert isinstance(room.media, RoomMedia)
            assert room.media.router.idle and not room.media.router.transports
        # A member coming back gets the loops again, and loses them on leaving.
        name = RoomName("room-0")
        room, participant = await manager.join(JoinRequest(
            room=name, identity=Identity("bob"), name="", metadata="",
            grants=expand_grants(name, Role.LISTENER, {}), sink=lambda event: None,
            media=True))
        assert isinstance(room.media, RoomMedia) and not room.media.router.idle
        manager.leave(name, participant.id, LeaveReason.CLIENT_LEFT)
        assert await settle(baseline) == baseline
    finally:
        await manager.close()
