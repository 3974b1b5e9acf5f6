"""The ``redis`` and ``cluster`` sections of the node's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, kw_only=True)
class RedisConfig:
    """Where the cluster's shared state lives. Empty ``url``: a single in-memory node."""

    url: str = ""
    """``redis://[:password@]host:port/db``, ``rediss://`` for TLS, ``unix://`` for a socket."""
    ca_file: str = ""
    """PEM file of the CA(s) a ``rediss://`` server's certificate must chain to; empty:
    the system's trusted CAs."""
    timeout: float = 1.0
    """Deadline of one Redis command (and of a connection attempt), seconds."""
    retry_for: float = 2.0
    """How long a call the node waits on (a join's room claim) keeps retrying, seconds."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.url and urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url: redis://, rediss:// or unix://")
        if self.ca_file and urlsplit(self.url).scheme != "rediss":
            raise ValueError("ca_file: only with a rediss:// url")
        if not 0 < self.timeout <= 30:
            raise ValueError("timeout: more than 0, at most 30 seconds")
        if not self.timeout <= self.retry_for <= 60:
            raise ValueError("retry_for: at least timeout, at most 60 seconds")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """How a node takes part in the cluster (used only with ``redis.url``)."""

    drain_timeout: float = 60.0
    """Seconds a draining node keeps its rooms before their participants move on."""
    node_ttl: float = 6.0
    """Lifetime of the node's record in Redis; a node silent this long counts as dead."""
    heartbeat_interval: float = 2.0
    """The node refreshes its record (state and load) this often, seconds."""
    state_ttl: float = 0.0
    """Lifetime of a room's shared state after its last change, seconds; 0: twice
    ``rooms.empty_timeout`` plus an hour, so it outlives an empty room."""

    relay_heartbeat_interval: float = 1.0
    """Each end of a relayed session tells the other it is alive this often, seconds."""
    relay_timeout: float = 4.0
    """A relayed session whose other end was silent this long is lost: the client is told
    to reconnect (at least twice ``relay_heartbeat_interval``)."""
    request_timeout: float = 3.0
    """How long a node waits for another node's answer (opening a relayed session, an
    admin request forwarded to a room's owner), seconds."""

    @property
    def stale_after(self) -> float:
        """A node record unrefreshed this long (1.5 heartbeats) is stale: the owner may be
        replaced by a node that also saw it silent on the bus, and a node that finds its own
        record was stale checks that it still owns its rooms. Every node of a cluster must
        use the same ``node_ttl`` and ``heartbeat_interval``."""
        return 1.5 * self.heartbeat_interval

    def check(self) -> None:
        if self.relay_heartbeat_interval <= 0 or \
                self.relay_timeout < 2 * self.relay_heartbeat_interval:
            raise ValueError("relay_timeout: at least twice relay_heartbeat_interval "
                             "(both positive)")
        if not 0 < self.request_timeout <= 60:
            raise ValueError("request_timeout: more than 0, at most 60 seconds")
        if self.heartbeat_interval <= 0 or self.node_ttl < 2 * self.heartbeat_interval:
            raise ValueError("node_ttl: at least twice heartbeat_interval (both positive)")
        if self.drain_timeout < 0:
            raise ValueError("drain_timeout: 0 or more")
        if self.state_ttl < 0:
            raise ValueError("state_ttl: 0 or more")
