"""Room placement: one owner per room, claimed atomically; new rooms on the least loaded node.

The claim is one Lua script, so no two nodes can both believe they own a
room: it keeps a live owner (one whose node record has not expired) and
otherwise hands the room to the claimant. A new room goes to the less loaded
of two serving nodes picked at random (power of two choices: near the best
choice without every node herding onto the same least-loaded one), compared
by participants, then rooms. Draining nodes take no new rooms.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.keys import NODE_PREFIX, ROOM_PREFIX, room_key
from conference.cluster.nodes import NodeRecord, NodeRegistry, NodeState
from conference.ids import NodeId, RoomName

CLAIM_SCRIPT = """
-- KEYS[1]: the room's claim key; ARGV[1]: the claimant; ARGV[2]: the node key prefix.
-- The owner stays if its node record is alive; otherwise the claimant takes the room.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

RELEASE_SCRIPT = """
-- KEYS[1]: the room's claim key; ARGV[1]: the node releasing it. Only the owner may.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

LIST_SCRIPT = """
-- KEYS: claim keys. Returns the owner of each, or false when the owner is dead (the stale
-- claim is deleted at the same time, only if it still names that owner).
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
    out[i] = owner
  else
    if owner then redis.call('DEL', key) end
    out[i] = false
  end
end
return out
"""


def two_choices(nodes: Sequence[NodeRecord], rng: random.Random | None = None,
                ) -> NodeRecord | None:
    """The less loaded of two serving nodes drawn at random (by participants, then rooms)."""
    serving = [n for n in nodes if n.state is NodeState.SERVING]
    if len(serving) <= 1:
        return serving[0] if serving else None
    a, b = (rng or random).sample(serving, 2)
    return min(a, b, key=lambda n: (n.load.participants, n.load.rooms, n.id))


class Placement:
    """Claims, releases and lists rooms; chooses a node for a new room."""

    def __init__(self, client: RedisClient, nodes: NodeRegistry,
                 rng: random.Random | None = None) -> None:
        self._client = client
        self._nodes = nodes
        self._rng = rng or random.Random()
        self._claim = client.redis.register_script(CLAIM_SCRIPT)
        self._release = client.redis.register_script(RELEASE_SCRIPT)
        self._list = client.redis.register_script(LIST_SCRIPT)

    async def claim(self, room: RoomName, node: NodeId) -> NodeId:
        """``node`` owns ``room`` unless a live node already does; returns the owner."""
        async def run(r: Redis) -> str:
            return str(await self._claim(keys=[room_key(room)], args=[node, NODE_PREFIX],
                                         client=r))

        return NodeId(await self._client.call("claim", run))

    async def owner(self, room: RoomName) -> NodeId | None:
        """The room's live owner, if any."""
        async def read(r: Redis) -> str | None:
            value = await r.get(room_key(room))
            if value is None or not await r.exists(NODE_PREFIX + str(value)):
                return None
            return str(value)

        current = await self._client.call("claim", read)
        return None if current is None else NodeId(current)

    async def place(self, room: RoomName, fallback: NodeId) -> NodeId:
        """The room's live owner, or a new one: the less loaded of two serving nodes
        (``fallback`` when no node is serving, e.g. before the first heartbeat)."""
        current = await self.owner(room)
        if current is not None:
            return current
        chosen = two_choices(await self._nodes.serving(), self._rng)
        return await self.claim(room, chosen.id if chosen is not None else fallback)

    async def release(self, room: RoomName, node: NodeId) -> None:
        async def run(r: Redis) -> object:
            return await self._release(keys=[room_key(room)], args=[node], client=r)

        await self._client.call("release", run)

    async def rooms(self) -> dict[RoomName, NodeId]:
        """Every room with a live owner, cluster-wide; stale claims are removed."""
        async def run(r: Redis) -> dict[RoomName, NodeId]:
            keys = [k async for k in r.scan_iter(match=ROOM_PREFIX + "*", count=500)]
            out: dict[RoomName, NodeId] = {}
            for start in range(0, len(keys), 200):
                batch = keys[start:start + 200]
                owners = await self._list(keys=batch, args=[NODE_PREFIX], client=r)
                for key, owner in zip(batch, owners, strict=True):
                    if owner:
                        out[RoomName(key[len(ROOM_PREFIX):])] = NodeId(owner)
            return out

        return await self._client.call("rooms", run)
