"""Where rooms live: the room registry protocol and its in-memory implementation.

A single node uses :class:`InMemoryRoomRegistry`. A cluster puts Redis behind
the same protocol: ``conference.cluster.registry.RedisRoomRegistry`` (room →
node claims checked against node records with a TTL).
"""

from __future__ import annotations

from typing import Protocol

from conference.ids import NodeId, RoomName


class RoomRegistry(Protocol):
    """The small surface the RoomManager needs from cluster state."""

    async def claim_room(self, room: RoomName, node: NodeId) -> NodeId:
        """Make ``node`` the owner of ``room`` unless a live node owns it; return the owner."""
        ...

    async def place_room(self, room: RoomName, node: NodeId) -> NodeId:
        """The room's live owner, or the node a new room should go to (claimed for it);
        ``node`` is the asking node, used when there is no better choice."""
        ...

    async def release_room(self, room: RoomName, node: NodeId) -> None:
        """Forget the room if ``node`` owns it."""
        ...

    async def set_participant_count(self, room: RoomName, count: int) -> None:
        """Record presence for monitoring and placement."""
        ...

    async def rooms(self) -> dict[RoomName, NodeId]:
        """Every known room and its owner."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class InMemoryRoomRegistry:
    """Process-local registry: what one node uses, and the fake in tests."""

    def __init__(self) -> None:
        self._owners: dict[RoomName, NodeId] = {}
        self._counts: dict[RoomName, int] = {}

    async def claim_room(self, room: RoomName, node: NodeId) -> NodeId:
        return self._owners.setdefault(room, node)

    async def place_room(self, room: RoomName, node: NodeId) -> NodeId:
        return await self.claim_room(room, node)

    async def release_room(self, room: RoomName, node: NodeId) -> None:
        if self._owners.get(room) == node:
            del self._owners[room]
            self._counts.pop(room, None)

    async def set_participant_count(self, room: RoomName, count: int) -> None:
        if room in self._owners:
            self._counts[room] = count

    async def rooms(self) -> dict[RoomName, NodeId]:
        return dict(self._owners)

    def participant_count(self, room: RoomName) -> int:
        return self._counts.get(room, 0)

    async def close(self) -> None:
        self._owners.clear()
        self._counts.clear()
