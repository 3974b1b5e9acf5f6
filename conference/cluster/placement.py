"""Room placement: one owner per room, claimed atomically; new rooms on the least loaded node.

The claim is one Lua script, so no two nodes can both believe they own a
room: it keeps a live owner (one whose node record has not expired) and
otherwise hands the room to the claimant. A new room goes to the less loaded
of two serving nodes picked at random (power of two choices: near the best
choice without every node herding onto the same least-loaded one), compared
by participants, then rooms. Draining nodes take no new rooms.

A dead owner's room would otherwise wait for its record to expire
(``node_ttl``). A node that has seen the owner go silent on the bus (a relayed
session's heartbeat timeout, an unanswered open) marks it *suspect*; a claim
made for a suspect owner's room also treats it as dead when Redis saw its
record go unrefreshed for longer than ``stale_after`` (1.5 heartbeats; measured
on Redis's clock from the record's remaining TTL). Both at once mean the owner
is dead, hung or cut off from Redis; if it comes back, its next heartbeat sees
that its record went stale and checks its claims (conference/cluster/cluster.py),
handing over any room claimed meanwhile: one owner per room in Redis, and no
node keeps a copy of a room it lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig
from conference.cluster.keys import NODE_PREFIX, ROOM_PREFIX, room_key
from conference.cluster.nodes import NodeRecord, NodeRegistry, NodeState
from conference.ids import NodeId, RoomName

CLAIM_SCRIPT = """
-- KEYS[1]: the room's claim key; ARGV[1]: the claimant; ARGV[2]: the node key prefix;
-- ARGV[3]: the node TTL and ARGV[4] how long a record may go unrefreshed before its owner
-- counts as dead (milliseconds; 0: only an expired record does, the owner is not suspect).
-- The owner stays if its node record is alive; otherwise the claimant takes the room.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  local left = redis.call('PTTL', ARGV[2] .. owner)
  local stale = tonumber(ARGV[4]) > 0 and left >= 0 and
                tonumber(ARGV[3]) - left > tonumber(ARGV[4])
  if left ~= -2 and not stale then
    return owner
  end
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

    def __init__(self, client: RedisClient, nodes: NodeRegistry, config: ClusterConfig,
                 rng: random.Random | None = None) -> None:
        self._client = client
        self._nodes = nodes
        self._config = config
        self._rng = rng or random.Random()
        self._suspects: dict[NodeId, float] = {}
        """Nodes seen silent on the bus → ``time.monotonic()`` of the last sighting."""
        self._claim = client.redis.register_script(CLAIM_SCRIPT)
        self._release = client.redis.register_script(RELEASE_SCRIPT)
        self._list = client.redis.register_script(LIST_SCRIPT)

    def suspect(self, node: NodeId) -> None:
        """``node`` went silent on the bus: its rooms may be claimed once Redis also saw
        its record go stale."""
        self._suspects[node] = time.monotonic()

    def heard(self, node: NodeId) -> None:
        """``node`` spoke on the bus: not suspect any more."""
        if self._suspects:
            self._suspects.pop(node, None)

    def suspected(self, node: NodeId) -> bool:
        seen = self._suspects.get(node)
        if seen is not None and time.monotonic() - seen > self._config.node_ttl:
            del self._suspects[node]  # its record has expired by now, if it is dead
            return False
        return seen is not None

    async def claim(self, room: RoomName, node: NodeId, *, stale_ok: bool = False) -> NodeId:
        """``node`` owns ``room`` unless a live node already does; returns the owner.
        ``stale_ok``: an owner whose record went unrefreshed for ``stale_after`` counts as
        dead (only for an owner this node saw silent)."""
        ttl_ms = int(self._config.node_ttl * 1000)
        stale_ms = int(self._config.stale_after * 1000) if stale_ok else 0

        async def run(r: Redis) -> str:
            return str(await self._claim(keys=[room_key(room)],
                                         args=[node, NODE_PREFIX, ttl_ms, stale_ms], client=r))

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
        if current is not None and not self.suspected(current):
            return current
        serving = [n for n in await self._nodes.serving() if not self.suspected(n.id)]
        chosen = two_choices(serving, self._rng)
        return await self.claim(room, chosen.id if chosen is not None else fallback,
                                stale_ok=current is not None)

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
