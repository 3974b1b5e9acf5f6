"""Node records: each node announces itself (state and load) under a key with a TTL.

A node writes ``parley:node:{id}`` every ``heartbeat_interval`` with a TTL of
``node_ttl``: a node that dies, hangs or loses Redis disappears by itself, and
nobody ever has to clean up after it. The record is one JSON value; readers
list the serving nodes with SCAN + MGET.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig
from conference.cluster.keys import NODE_PREFIX, node_key
from conference.cluster.metrics import ClusterMetrics
from conference.cluster.waker import Waker
from conference.errors import ConferenceError
from conference.ids import NodeId

log = logging.getLogger("parley.cluster")


class NodeState(StrEnum):
    SERVING = "serving"
    """Takes new rooms."""
    DRAINING = "draining"
    """Keeps its rooms for now, takes no new ones."""


@dataclass(frozen=True, kw_only=True)
class NodeLoad:
    """What placement compares, measured by the node."""

    rooms: int = 0
    participants: int = 0
    tracks: int = 0
    """Published tracks."""
    packets_per_second: float = 0.0
    """RTP packets forwarded to subscribers per second, over the last heartbeat."""
    cpu: float = 0.0
    """CPU used by the process over the last heartbeat, in cores (1.0: one core busy)."""


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    id: NodeId
    state: NodeState
    load: NodeLoad
    started_at: float
    updated_at: float
    """Wall-clock time of the write."""

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> NodeRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(id=NodeId(data["id"]), state=NodeState(data["state"]),
                   load=NodeLoad(**data["load"]), started_at=float(data["started_at"]),
                   updated_at=float(data["updated_at"]))


LoadProbe = Callable[[], NodeLoad]
Registered = Callable[[], Awaitable[None]]

BEAT_SCRIPT = """
-- KEYS[1]: the node's key; ARGV[1]: its record; ARGV[2]: the TTL (ms).
-- Returns what was left of the old record's TTL (-2: it had expired or was never written).
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return left
"""


class NodeRegistry:
    """This node's record and the view of the others.

    ``start()`` starts the heartbeat task (``cluster-heartbeat``); ``close()``
    cancels and awaits it and deletes the record. Idempotent.
    """

    def __init__(self, client: RedisClient, config: ClusterConfig, node: NodeId,
                 load: LoadProbe, *, metrics: ClusterMetrics | None = None,
                 on_registered: Registered | None = None) -> None:
        self._client = client
        self._config = config
        self.node = node
        self._load = load
        self._metrics = metrics
        self._on_registered = on_registered
        self.state = NodeState.SERVING
        self.started_at = time.time()
        self.last_beat: float | None = None
        """``time.monotonic()`` of the last heartbeat Redis took."""
        self._registered = False
        self._beat = client.redis.register_script(BEAT_SCRIPT)
        self._wake = Waker()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def healthy(self) -> bool:
        """The node's record is in Redis as far as this node can tell."""
        return (self._registered and self.last_beat is not None
                and time.monotonic() - self.last_beat < self._config.node_ttl)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="cluster-heartbeat")

    def set_state(self, state: NodeState) -> None:
        """Change the announced state; the record is rewritten at once."""
        self.state = state
        if self._metrics is not None:
            self._metrics.set_state(state.value)
        self._wake.wake()

    async def _run(self) -> None:
        while not self._closed:
            await self.beat()
            await self._wake.sleep(self._config.heartbeat_interval)

    async def beat(self) -> bool:
        """Write the record once; returns whether Redis took it."""
        record = NodeRecord(id=self.node, state=self.state, load=self._load(),
                            started_at=self.started_at, updated_at=time.time())
        ttl_ms = int(self._config.node_ttl * 1000)

        async def write(r: Redis) -> int:
            return int(await self._beat(keys=[node_key(self.node)],
                                        args=[record.encode(), ttl_ms], client=r))

        try:
            left = await self._client.call("heartbeat", write, retry_for=0)
        except ConferenceError:
            if self._registered:
                log.warning("node record not refreshed", extra={"node": self.node})
            self._registered = False
            return False
        self.last_beat = time.monotonic()
        # A record that had expired, or had gone stale (others may have claimed this node's
        # rooms meanwhile, placement.py): register again, which checks every claim.
        if left == -2 or ttl_ms - left > self._config.stale_after * 1000:
            self._registered = False
        if not self._registered:
            self._registered = True
            log.info("node registered", extra={"node": self.node, "state": self.state.value})
            if self._on_registered is not None:
                try:
                    await self._on_registered()
                except ConferenceError:
                    self._registered = False  # try the whole registration again next beat
        return True

    async def nodes(self) -> list[NodeRecord]:
        """Every live node's record (the ones whose key has not expired)."""
        async def read(r: Redis) -> list[NodeRecord]:
            keys = [k async for k in r.scan_iter(match=NODE_PREFIX + "*", count=200)]
            if not keys:
                return []
            values = await r.mget(keys)
            return [NodeRecord.decode(str(v)) for v in values if v is not None]

        return await self._client.call("nodes", read)

    async def serving(self) -> list[NodeRecord]:
        return [n for n in await self.nodes() if n.state is NodeState.SERVING]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        async def delete(r: Redis) -> object:
            return await r.delete(node_key(self.node))

        with contextlib.suppress(ConferenceError):
            await self._client.call("unregister", delete, retry_for=0)
