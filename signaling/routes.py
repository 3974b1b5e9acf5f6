"""HTTP routes: the signalling WebSocket, health, metrics, the admin API and the meeting page."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conference.errors import ConferenceCode
from signaling.admin import add_admin_routes, json_error
from signaling.appkeys import NODE, RELAY
from signaling.connection import Connection
from signaling.devjoin import add_devjoin_routes
from signaling.errors import CloseCode, ErrorCode

log = logging.getLogger("parley.http")

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (non-browser), same origin, localhost, or a configured origin."""
    if not origin:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    if parts.hostname in _LOCAL_HOSTS:
        return True
    return bool(host) and parts.netloc == host


async def rtc(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    cfg = node.config.signaling
    if not origin_allowed(request.headers.get("Origin"), request.host, cfg.allowed_origins):
        node.metrics.auth_failures.labels(reason=ErrorCode.ORIGIN_NOT_ALLOWED.value).inc()
        return json_error(403, ErrorCode.ORIGIN_NOT_ALLOWED, "this Origin may not connect")
    if not node.accepting:
        return json_error(503, ConferenceCode.NODE_DRAINING, "node is not taking new connections")
    ws = web.WebSocketResponse(
        autoping=False,
        timeout=3.0,
        # Frames up to twice the limit are read and refused politely; larger ones make
        # aiohttp close with 1009 before buffering them.
        max_msg_size=cfg.max_message_bytes * 2,
    )
    await ws.prepare(request)
    connection = Connection(
        ws, node,
        url_token=request.query.get("access_token"),
        url_room=request.query.get("room"),
        remote=request.remote,
        transport=request.transport,
        relay=request.app.get(RELAY),
    )
    await connection.run()
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def livez(request: web.Request) -> web.Response:
    """Liveness: the event loop answers HTTP. It reads no shared state (no Redis, no registry),
    so an outage of a backing service never gets healthy nodes restarted, and it stays 200
    while the node drains (readiness, ``/readyz``, is what turns 503)."""
    return web.json_response({"live": True, "node": request.app[NODE].id})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.ready and node.cluster_reachable:
        return web.json_response({"ready": True, "node": node.id})
    body = {"ready": False, "node": node.id, "draining": node.draining}
    if node.cluster is not None:
        body["cluster_reachable"] = node.cluster_reachable
    return web.json_response(body, status=503)


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = generate_latest(node.metrics_registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def close_codes_module() -> str:
    """The close codes as an ES module for the meeting page, from the one definition."""
    codes = json.dumps({code.name: code.value for code in CloseCode}, indent=2)
    return ("// Served by the node from signaling/errors.py (CloseCode); not a file on disk.\n"
            f"export const CloseCode = Object.freeze({codes});\n")


async def codes_js(request: web.Request) -> web.Response:
    return web.Response(text=close_codes_module(), content_type="application/javascript",
                        headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.Response:
    page = resources.files("signaling").joinpath("static/index.html").read_text()
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/rtc", rtc)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_admin_routes(app)
    add_devjoin_routes(app)
    app.router.add_get("/", index)
    app.router.add_get("/static/codes.js", codes_js)  # before the static directory
    app.router.add_static("/static/", Path(str(resources.files("signaling") / "static")))
