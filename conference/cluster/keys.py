"""The Redis key layout of the cluster, in one place (docs/architecture.md has the table).

- ``parley:node:{node}``: the node's record (JSON string); TTL ``cluster.node_ttl``,
  refreshed every ``cluster.heartbeat_interval`` by the node itself.
- ``parley:room:{room}``: the owner's node id (string), no TTL: a claim whose owner's
  record is gone is void; the next claim replaces it, a listing deletes it.
- ``parley:state:{room}``: the room's shared state (JSON string); TTL ``cluster.state_ttl``
  from the last write, rewritten by the owner well before it runs out.
- ``parley:bus:{node}``: not a key but the node's pub/sub inbox channel (conference/cluster/bus.py).
"""

from __future__ import annotations

from conference.ids import NodeId, RoomName

PREFIX = "parley:"
NODE_PREFIX = PREFIX + "node:"
ROOM_PREFIX = PREFIX + "room:"
STATE_PREFIX = PREFIX + "state:"
BUS_PREFIX = PREFIX + "bus:"


def node_key(node: NodeId) -> str:
    return NODE_PREFIX + node


def room_key(room: RoomName) -> str:
    return ROOM_PREFIX + room


def state_key(room: RoomName) -> str:
    return STATE_PREFIX + room


def bus_key(node: NodeId) -> str:
    return BUS_PREFIX + node
