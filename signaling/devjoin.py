"""Development-mode join tokens for the meeting page's join form.

``GET`` or ``POST /api/dev-token?room=ROOM&name=NAME[&role=ROLE]`` answers
``{"token", "room", "identity", "name", "role"}`` with a join token minted with
the node's first API key. It exists only while the node runs in development
mode (``parley serve`` without keys, ``NodeConfig.development``); any other node
answers 404, as if the route did not exist. Without ``room`` and ``name`` it
answers ``{"development": true}``: the page asks that to decide whether to show
its join form. The identity is the name made
URL-safe plus a random suffix, so two people typing the same name do not
replace each other.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from conference.permissions import Role
from signaling.admin import json_error
from signaling.appkeys import NODE
from signaling.auth import mint_token

DEV_TOKEN_TTL = 12 * 3600.0
"""Seconds a development token stays valid."""
_MAX_FIELD = 256
_NOT_IDENTITY = re.compile(r"[^a-z0-9]+")


def _identity(name: str) -> str:
    base = _NOT_IDENTITY.sub("-", name.lower()).strip("-")[:32] or "guest"
    return f"{base}-{secrets.token_hex(3)}"


async def dev_token(request: web.Request) -> web.Response:
    config = request.app[NODE].config
    if not config.development or not config.auth.keys:
        return json_error(404, "not_found", "not found")
    room = request.query.get("room", "").strip()
    name = request.query.get("name", "").strip()
    role = request.query.get("role", Role.MODERATOR.value)
    if "room" not in request.query and "name" not in request.query:
        return web.json_response({"development": True}, headers={"Cache-Control": "no-store"})
    if not room or not name:
        return json_error(400, "invalid_request", "room and name are required")
    if len(room) > _MAX_FIELD or len(name) > _MAX_FIELD:
        return json_error(400, "invalid_request", "room and name are limited to 256 characters")
    if room == "*":
        return json_error(400, "invalid_request", "'*' is not a room")
    if role not in {r.value for r in Role}:
        return json_error(400, "invalid_request", "role must be speaker, listener or moderator")
    key, secret = next(iter(config.auth.keys.items()))
    identity = _identity(name)
    token = mint_token(key=key, secret=secret, room=room, identity=identity, name=name,
                       role=role, ttl=DEV_TOKEN_TTL)
    return web.json_response({"token": token, "room": room, "identity": identity,
                              "name": name, "role": role},
                             headers={"Cache-Control": "no-store"})


def add_devjoin_routes(app: web.Application) -> None:
    app.router.add_get("/api/dev-token", dev_token)
    app.router.add_post("/api/dev-token", dev_token)
