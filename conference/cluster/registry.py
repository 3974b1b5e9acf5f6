"""``RedisRoomRegistry``: conference/registry.py's protocol on the node records and claims."""

from __future__ import annotations

from conference.cluster.placement import Placement
from conference.ids import NodeId, RoomName


class RedisRoomRegistry:
    """Room → node for the whole cluster. The connection belongs to the ``Cluster``."""

    def __init__(self, placement: Placement) -> None:
        self._placement = placement
        self._counts: dict[RoomName, int] = {}

    async def claim_room(self, room: RoomName, node: NodeId) -> NodeId:
        return await self._placement.claim(room, node)

    async def place_room(self, room: RoomName, node: NodeId) -> NodeId:
        return await self._placement.place(room, node)

    async def release_room(self, room: RoomName, node: NodeId) -> None:
        self._counts.pop(room, None)
        await self._placement.release(room, node)

    async def set_participant_count(self, room: RoomName, count: int) -> None:
        # Presence reaches the cluster as the node record's load; per-room counts stay here.
        self._counts[room] = count

    def participant_count(self, room: RoomName) -> int:
        return self._counts.get(room, 0)

    async def rooms(self) -> dict[RoomName, NodeId]:
        return await self._placement.rooms()

    async def close(self) -> None:
        self._counts.clear()
