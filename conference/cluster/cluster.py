"""``Cluster``: everything a node needs of Redis, built and closed in one place.

Created by the node when ``redis.url`` is set. It owns the Redis client, the
node's record and heartbeat, placement, the room registry, the room state
store and the bus to the other nodes. ``start()`` (on the running loop) starts
the heartbeat, the state writer and the bus; ``close()`` stops them, removes
the node's record and closes the connection. Closing order: bus (flushed) →
state writer (flushed) → heartbeat and record → client.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry

from conference.cluster.bus import Bus
from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig, RedisConfig
from conference.cluster.metrics import ClusterMetrics
from conference.cluster.nodes import NodeLoad, NodeRegistry, NodeState
from conference.cluster.placement import Placement
from conference.cluster.redis_state import RedisRoomStateStore
from conference.cluster.registry import RedisRoomRegistry
from conference.ids import NodeId
from conference.manager import RoomManager

log = logging.getLogger("parley.cluster")


class LoadMeter:
    """The node's load for its record: counted from the rooms, rates over the last call."""

    def __init__(self, manager: RoomManager) -> None:
        self._manager = manager
        self._at = time.monotonic()
        self._cpu = time.process_time()
        self._packets = 0

    def __call__(self) -> NodeLoad:
        now, cpu = time.monotonic(), time.process_time()
        stats, _ = self._manager.media_snapshot()
        elapsed = max(now - self._at, 1e-3)
        load = NodeLoad(
            rooms=len(self._manager.rooms),
            participants=self._manager.participant_count(),
            tracks=sum(len(p.tracks) for r in self._manager.rooms.values()
                       for p in r.participants),
            packets_per_second=round(max(0, stats.packets_out - self._packets) / elapsed, 1),
            cpu=round((cpu - self._cpu) / elapsed, 3))
        self._at, self._cpu, self._packets = now, cpu, stats.packets_out
        return load


class Cluster:
    def __init__(self, redis: RedisConfig, config: ClusterConfig, node: NodeId,
                 metrics: CollectorRegistry, *, state_ttl: float) -> None:
        self.config = config
        self.node = node
        self.metrics = ClusterMetrics(metrics)
        self.client = RedisClient(redis, self.metrics)
        self.nodes = NodeRegistry(self.client, config, node, self._load,
                                  metrics=self.metrics, on_registered=self._registered)
        self.placement = Placement(self.client, self.nodes, config)
        self.registry = RedisRoomRegistry(self.placement)
        self.state = RedisRoomStateStore(self.client, state_ttl)
        self.bus = Bus(self.client, node, self.metrics)
        self._manager: RoomManager | None = None
        self._meter: LoadMeter | None = None

    def attach(self, manager: RoomManager) -> None:
        """The node's rooms: measured for the node record, re-claimed on registration."""
        self._manager = manager
        self._meter = LoadMeter(manager)

    @property
    def healthy(self) -> bool:
        return self.nodes.healthy

    def start(self) -> None:
        self.state.start()
        self.nodes.start()
        self.bus.start()

    def set_draining(self) -> None:
        self.nodes.set_state(NodeState.DRAINING)

    def _load(self) -> NodeLoad:
        load = self._meter() if self._meter is not None else NodeLoad()
        self.metrics.rooms_owned.set(load.rooms)
        return load

    async def _registered(self) -> None:
        """The node's record is (again) in Redis, or had gone stale: claim every room it
        holds, in case Redis lost them (a restart without persistence), and rewrite their
        state. A room claimed by another node while this one was away is handed over: its
        copy here closes (participants told to reconnect) and none of its state is written."""
        if self._manager is None:
            return
        for name in list(self._manager.rooms):
            owner = await self.placement.claim(name, self.node)
            if owner != self.node:
                self.metrics.claim_conflicts.inc()
                log.warning("room claimed by another node while this one was away; "
                            "handing it over", extra={"room": name, "owner": owner})
                self._manager.give_up(name)
                self.state.drop(name)
        self.state.resync()

    async def close(self) -> None:
        """Idempotent."""
        await self.bus.close()
        await self.state.close()
        await self.nodes.close()
        await self.client.close()

