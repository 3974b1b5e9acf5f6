"""The aiohttp application factory: compose, don't subclass."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from conference.registry import RoomRegistry
from signaling.admin import serve_forwarded
from signaling.appkeys import CONFIG, NODE, RELAY
from signaling.config import NodeConfig
from signaling.node import Node
from signaling.relay import Relay
from signaling.routes import add_routes


def create_app(config: NodeConfig, *, registry: RoomRegistry | None = None) -> web.Application:
    """An application serving one node. The Node lives in a cleanup context."""
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    # The node exists from construction so routes and tests can reach it; the
    # cleanup context owns its shutdown.
    node = app[NODE] = Node(config, registry=registry)
    if node.cluster is not None:
        # The node starts and closes it (Node.start, Node.close: after the rooms).
        relay = app[RELAY] = Relay(node, node.cluster.bus, config.cluster)
        node.relay = relay
        serve_forwarded(relay, node)

    async def node_ctx(app: web.Application) -> AsyncIterator[None]:
        app[NODE].start()
        yield
        await app[NODE].close()

    async def drain(app: web.Application) -> None:
        await app[NODE].drain(app[CONFIG].shutdown_grace)

    app.on_shutdown.append(drain)
    # First in, last out: the media socket outlives every room's peer connections.
    app.cleanup_ctx.append(media_socket_ctx)
    app.cleanup_ctx.append(node_ctx)
    add_routes(app)
    return app


async def media_socket_ctx(app: web.Application) -> AsyncIterator[None]:
    """The node's media UDP socket (``sfu.udp_port``), open while the app runs."""
    async with app[NODE].rooms.media_socket():
        yield
