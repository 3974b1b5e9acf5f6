"""The node's TCP listener: aiohttp's protocol behind a guard against connection abuse.

aiohttp closes a keep-alive connection that idles without a complete request, but it has no
deadline on a connection's first request: a client that opens a socket and sends headers
a byte at a time (slowloris) holds a file descriptor for as long as it likes. Each accepted
socket therefore goes through a ``GuardedProtocol`` that

- refuses the socket at once when its IP already holds ``max_connections_per_ip`` sockets;
- aborts it when the end of the first request's headers (a blank line) has not arrived
  within ``header_timeout`` seconds.

The guard sits between asyncio and aiohttp as a plain ``asyncio.Protocol`` that forwards
every callback; what it relies on of aiohttp is only that ``BaseRunner.server`` (public) is a
protocol factory. Later requests on a kept-alive connection are bounded by aiohttp's own
``keepalive_timeout``, which the CLI sets to the same ``header_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from signaling.config import NodeConfig, SignalingConfig
from signaling.metrics import SignalingMetrics

log = logging.getLogger("parley.listener")

_END_OF_HEADERS = b"\r\n\r\n"
RUNNER_SHUTDOWN_TIMEOUT = 1.0
"""Seconds aiohttp waits for request handlers still running after the node's drain (its
default is 60 s); by then every client socket is gone."""


class ConnectionGuard:
    """A protocol factory for ``loop.create_server``; one per listening socket."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], config: SignalingConfig,
                 metrics: SignalingMetrics) -> None:
        self.inner = inner
        self.config = config
        self.metrics = metrics
        self.per_ip: Counter[str] = Counter()
        """Open sockets by remote IP (an IP leaves the map with its last socket)."""

    def __call__(self) -> GuardedProtocol:
        return GuardedProtocol(self)

    def admit(self, ip: str) -> bool:
        cap = self.config.max_connections_per_ip
        if cap and self.per_ip[ip] >= cap:
            self.metrics.refused("per_ip_connections")
            return False
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class GuardedProtocol(asyncio.Protocol):
    """One accepted socket: admission, the header deadline, then aiohttp's protocol."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._ip: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(ip):
            transport.abort()
            return
        self._ip = ip
        timeout = self._guard.config.header_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, self._headers_too_slow)
        self._inner = self._guard.inner()
        self._inner.connection_made(transport)

    def _headers_too_slow(self) -> None:
        self._timer = None
        self._guard.metrics.refused("header_timeout")
        log.info("no request headers within the header timeout", extra={"remote": self._ip})
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-(len(_END_OF_HEADERS) - 1):]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ip is not None:
            self._guard.release(self._ip)
            self._ip = None
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)


class MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's traceback for a request it could not parse (a request line over
    8190 bytes, a broken header: answered 400 and closed) into one warning line. The
    client's bytes are not logged, and a flood of them is counted, not dumped."""

    def __init__(self, metrics: SignalingMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        self._metrics.refused("malformed_http")
        record.msg, record.args = "malformed HTTP request refused (%d %s)", (
            error.code, type(error).__name__)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_malformed_requests(metrics: SignalingMetrics) -> None:
    server_log = logging.getLogger("aiohttp.server")
    for old in [f for f in server_log.filters if isinstance(f, MalformedRequestFilter)]:
        server_log.removeFilter(old)
    server_log.addFilter(MalformedRequestFilter(metrics))


@dataclass
class Serving:
    """A running application behind the guard; ``stop()`` after the node has drained."""

    runner: web.AppRunner
    server: asyncio.Server

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def serve(app: web.Application, config: NodeConfig,
                metrics: SignalingMetrics, *, reuse_port: bool = False) -> Serving:
    """Run ``app`` on ``config.host:config.port`` with every socket guarded; ``reuse_port``
    lets several processes listen on the same port (``parley serve --workers``)."""
    # keepalive_timeout: a kept-alive connection idles at most as long as a new one may take
    # to send its first request's headers.
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT,
                           keepalive_timeout=config.signaling.header_timeout)
    await runner.setup()
    assert runner.server is not None
    _quiet_malformed_requests(metrics)
    guard = ConnectionGuard(runner.server, config.signaling, metrics)
    server = await asyncio.get_running_loop().create_server(
        guard, config.host, config.port, reuse_address=True, reuse_port=reuse_port or None)
    return Serving(runner, server)
