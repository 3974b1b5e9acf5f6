"""The one way the node talks to Redis: deadlines, retries with back-off, coded failure.

Every Redis call of the cluster goes through :meth:`RedisClient.call` with a
name from ``REDIS_OPS`` (the metric label). A call gets ``redis.timeout`` per
attempt and, while the failure looks transient (connection refused or lost,
timeout), is retried with exponential back-off until ``retry_for`` runs out;
then it raises ``ConferenceError(cluster_unavailable)``. Nothing here touches
a running room: a failed call only fails the operation that made it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conference.cluster.config import RedisConfig
from conference.cluster.metrics import REDIS_OPS, ClusterMetrics
from conference.errors import ConferenceCode, ConferenceError

log = logging.getLogger("parley.cluster")

T = TypeVar("T")

_TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError,
              redis_errors.BusyLoadingError, redis_errors.TryAgainError, OSError, TimeoutError)
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


def unavailable(message: str = "the cluster state store is unreachable; retry later",
                ) -> ConferenceError:
    return ConferenceError(ConferenceCode.CLUSTER_UNAVAILABLE, message)


def _keep_cancellation() -> None:
    """Re-raise a cancellation that ``wait_for`` lost: on Python 3.11, when the command
    fails just as its task is cancelled (redis-py drops the connection on cancel), the
    failure comes out and the cancellation is swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisClient:
    """Owns one ``redis.asyncio`` connection pool; ``close()`` is idempotent."""

    def __init__(self, config: RedisConfig, metrics: ClusterMetrics | None = None) -> None:
        self.config = config
        self._metrics = metrics
        # Retries are ours (with a deadline and a metric); redis-py's own are turned off.
        tls: dict[str, Any] = {"ssl_ca_certs": config.ca_file} if config.ca_file else {}
        self.redis: Redis = Redis.from_url(
            config.url, decode_responses=True, socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout, retry=Retry(NoBackoff(), 0), **tls)
        self.last_ok: float | None = None
        """``time.monotonic()`` of the last call that succeeded."""
        self.up = False
        self._closed = False

    async def call(self, op: str, fn: Callable[[Redis], Awaitable[T]], *,
                   retry_for: float | None = None) -> T:
        """Run ``fn(redis)``; retried on transient failures until ``retry_for`` (default
        ``redis.retry_for``; 0: one attempt) has passed. Raises ``cluster_unavailable``."""
        assert op in REDIS_OPS, op
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.retry_for if retry_for is None else retry_for)
        delay = _FIRST_DELAY
        while True:
            try:
                result = await asyncio.wait_for(fn(self.redis), self.config.timeout)
            except _TRANSIENT as exc:
                _keep_cancellation()
                self._failed(op, exc)
                if self._closed or loop.time() + delay > deadline:
                    raise unavailable() from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
                continue
            except redis_errors.RedisError as exc:  # a refused command: retrying cannot help
                _keep_cancellation()
                self._failed(op, exc)
                raise unavailable(f"the cluster state store refused a command: {exc}") from exc
            self._ok()
            return result

    def _ok(self) -> None:
        self.last_ok = time.monotonic()
        if not self.up:
            log.info("redis reachable")
        self.up = True
        if self._metrics is not None:
            self._metrics.redis_up.set(1)

    def _failed(self, op: str, exc: BaseException) -> None:
        if self.up:
            log.warning("redis unreachable", extra={"op": op, "error": repr(exc)})
        self.up = False
        if self._metrics is not None:
            self._metrics.redis_errors.labels(op=op).inc()
            self._metrics.redis_up.set(0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.redis.aclose()
