"""HTTP routes: the signalling WebSocket, health, metrics, the admin API and the meeting page."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conference.events import LeaveReason
from conference.ids import Identity, RoomName
from signaling.appkeys import NODE
from signaling.auth import Claims
from signaling.errors import SignalError
from signaling.session import SignalSession

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
        node.metrics.auth_failures.labels(reason="origin_not_allowed").inc()
        return _json_error(403, "origin_not_allowed", "this Origin may not connect")
    if not node.ready:
        return _json_error(503, "node_draining", "node is not taking new connections")
    ws = web.WebSocketResponse(
        autoping=False,
        timeout=3.0,
        # Frames up to twice the limit are read and refused politely; larger ones make
        # aiohttp close with 1009 before buffering them.
        max_msg_size=cfg.max_message_bytes * 2,
    )
    await ws.prepare(request)
    session = SignalSession(
        ws, node,
        url_token=request.query.get("access_token"),
        url_room=request.query.get("room"),
        remote=request.remote,
    )
    await session.run()
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.ready:
        return web.json_response({"ready": True, "node": node.id})
    return web.json_response({"ready": False, "node": node.id, "draining": node.draining},
                             status=503)


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = generate_latest(node.metrics_registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: web.Request) -> web.Response:
    page = resources.files("signaling").joinpath("static/index.html").read_text()
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


# -- admin API --------------------------------------------------------------
def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _admin_claims(request: web.Request, room: str | None) -> Claims | web.Response:
    node = request.app[NODE]
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _json_error(401, "missing_token", "Authorization: Bearer <token> required")
    try:
        claims = node.verifier.verify(token.strip())
    except SignalError as err:
        node.metrics.auth_failures.labels(reason=err.code.value).inc()
        return _json_error(401, err.code.value, err.message)
    if not claims.grants.room_admin:
        return _json_error(403, "permission_denied", "the token lacks room_admin")
    if room is not None and claims.grants.room not in ("*", room):
        return _json_error(403, "permission_denied", "the token is for another room")
    return claims


def _room_view(node: Any, name: RoomName) -> dict[str, Any] | None:
    room = node.rooms.get(name)
    if room is None:
        return None
    return {
        "name": room.name,
        "created_at": room.created_at,
        "participants": [p.info().to_wire() for p in room.participants],
        "num_participants": len(room),
    }


async def list_rooms(request: web.Request) -> web.Response:
    claims = _admin_claims(request, None)
    if isinstance(claims, web.Response):
        return claims
    node = request.app[NODE]
    names = [n for n in node.rooms.rooms if claims.grants.room in ("*", n)]
    rooms = [{"name": n, "num_participants": len(node.rooms.rooms[n])} for n in sorted(names)]
    return web.json_response({"rooms": rooms})


async def get_room(request: web.Request) -> web.Response:
    name = RoomName(request.match_info["room"])
    claims = _admin_claims(request, name)
    if isinstance(claims, web.Response):
        return claims
    view = _room_view(request.app[NODE], name)
    if view is None:
        return _json_error(404, "unknown_room", "no such room on this node")
    return web.json_response(view)


async def remove_participant(request: web.Request) -> web.Response:
    name = RoomName(request.match_info["room"])
    claims = _admin_claims(request, name)
    if isinstance(claims, web.Response):
        return claims
    node = request.app[NODE]
    room = node.rooms.get(name)
    participant = room.by_identity(Identity(request.match_info["identity"])) if room else None
    if room is None or participant is None:
        return _json_error(404, "unknown_participant", "no such participant in this room")
    reason = "removed by an administrator"
    node.rooms.leave(name, participant.id, LeaveReason.REMOVED, notify=reason)
    log.info("participant removed",
             extra={"room": name, "participant": participant.id, "by": claims.identity})
    return web.json_response({"removed": participant.id})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/rtc", rtc)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room}", get_room)
    app.router.add_delete("/api/rooms/{room}/participants/{identity}", remove_participant)
    app.router.add_get("/", index)
