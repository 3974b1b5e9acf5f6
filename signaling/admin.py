"""The admin HTTP API for backends: rooms, participants, stage and moderation.

Every request carries ``Authorization: Bearer <join token>`` whose grants have
``room_admin``; ``grants.room`` is the room it covers, or ``*`` for all.
Errors are ``{"code", "message"}`` with the same codes as the wire protocol.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from conference import moderation
from conference.config import StagePolicy
from conference.errors import ConferenceCode, ConferenceError
from conference.ids import Identity, RoomName, TrackId
from conference.participant import Participant
from conference.room import Room
from signaling.appkeys import NODE
from signaling.auth import Claims
from signaling.errors import ErrorCode, SignalError, WireCode
from signaling.node import Node

log = logging.getLogger("parley.admin")

_STATUS: dict[WireCode, int] = {
    ConferenceCode.PERMISSION_DENIED: 403,
    ConferenceCode.UNKNOWN_PARTICIPANT: 404,
    ConferenceCode.UNKNOWN_TRACK: 404,
    ConferenceCode.STAGE_FULL: 409,
    ConferenceCode.NO_PENDING_REQUEST: 409,
    ConferenceCode.ALREADY_SPEAKER: 409,
    ConferenceCode.NOT_A_SPEAKER: 409,
    ConferenceCode.ALREADY_REQUESTED: 409,
}
"""HTTP status of a refused admin action; any other domain code is a 400."""


def json_error(status: int, code: WireCode | str, message: str) -> web.Response:
    return web.json_response({"code": str(code), "message": message}, status=status)


def _claims(request: web.Request, room: str | None) -> Claims | web.Response:
    node = request.app[NODE]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return json_error(401, ErrorCode.MISSING_TOKEN, "Authorization: Bearer <token> required")
    try:
        claims = node.verifier.verify(token.strip())
    except SignalError as err:
        node.metrics.auth_failures.labels(reason=err.code.value).inc()
        return json_error(401, err.code.value, err.message)
    if not claims.grants.room_admin:
        return json_error(403, ConferenceCode.PERMISSION_DENIED, "the token lacks room_admin")
    if room is not None and claims.grants.room not in ("*", room):
        return json_error(403, ConferenceCode.PERMISSION_DENIED, "the token is for another room")
    return claims


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"code": ErrorCode.MALFORMED_JSON.value,
                                                  "message": str(exc)}),
                                 content_type="application/json") from exc
    return data if isinstance(data, dict) else {}


RoomAction = Callable[[web.Request, Node, Room, Claims], Awaitable[web.Response]]
ParticipantAction = Callable[[web.Request, Node, Room, Participant, dict[str, Any]],
                             Awaitable[web.Response]]


def room_route(action: RoomAction) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Authorise, find the room, run the action, map conference errors to HTTP."""
    async def handler(request: web.Request) -> web.Response:
        name = RoomName(request.match_info["room"])
        claims = _claims(request, name)
        if isinstance(claims, web.Response):
            return claims
        node = request.app[NODE]
        room = node.rooms.get(name)
        if room is None:
            return json_error(404, ErrorCode.UNKNOWN_ROOM, "no such room on this node")
        try:
            return await action(request, node, room, claims)
        except ConferenceError as err:
            return json_error(_STATUS.get(err.code, 400), err.code, err.message)
    return handler


def participant_route(action: ParticipantAction) -> Callable[[web.Request],
                                                              Awaitable[web.Response]]:
    async def room_action(request: web.Request, node: Node, room: Room,
                          claims: Claims) -> web.Response:
        participant = room.by_identity(Identity(request.match_info["identity"]))
        if participant is None:
            return json_error(404, ConferenceCode.UNKNOWN_PARTICIPANT,
                              "no such participant in this room")
        body = await _body(request)
        log.info("admin action", extra={"room": room.name, "participant": participant.id,
                                        "action": request.path, "by": claims.identity})
        return await action(request, node, room, participant, body)
    return room_route(room_action)


def room_view(room: Room) -> dict[str, Any]:
    return {
        "name": room.name,
        "created_at": room.created_at,
        "num_participants": len(room),
        "options": {"max_speakers": room.options.max_speakers,
                    "stage_policy": room.options.stage_policy.value,
                    "speaker_request_timeout": room.options.speaker_request_timeout,
                    "moderator_can_unmute": room.options.moderator_can_unmute},
        "participants": [p.info().to_wire() | (
            {"media": room.media.stats(p.id)} if room.media.enabled else {})
            for p in room.participants],
        "speaker_requests": [{"participant": p.id, "message": msg, "expires_at": exp}
                             for p, msg, exp in room.stage.pending_requests()],
    }


async def list_rooms(request: web.Request) -> web.Response:
    claims = _claims(request, None)
    if isinstance(claims, web.Response):
        return claims
    rooms = request.app[NODE].rooms.rooms
    names = sorted(n for n in rooms if claims.grants.room in ("*", n))
    return web.json_response({"rooms": [{"name": n, "num_participants": len(rooms[n])}
                                        for n in names]})


@room_route
async def get_room(request: web.Request, node: Node, room: Room, claims: Claims) -> web.Response:
    return web.json_response(room_view(room))


@room_route
async def update_room(request: web.Request, node: Node, room: Room,
                      claims: Claims) -> web.Response:
    body = await _body(request)
    changes: dict[str, Any] = {}
    try:
        if "max_speakers" in body:
            changes["max_speakers"] = max(0, int(body["max_speakers"]))
        if "stage_policy" in body:
            changes["stage_policy"] = StagePolicy(body["stage_policy"])
        if "speaker_request_timeout" in body:
            changes["speaker_request_timeout"] = float(body["speaker_request_timeout"])
        if "moderator_can_unmute" in body:
            if not isinstance(body["moderator_can_unmute"], bool):
                raise ValueError("moderator_can_unmute must be true or false")
            changes["moderator_can_unmute"] = body["moderator_can_unmute"]
    except (TypeError, ValueError) as exc:
        return json_error(400, ErrorCode.INVALID_MESSAGE, f"bad room option: {exc}")
    room.options = replace(room.options, **changes)
    log.info("room options changed", extra={"room": room.name, "by": claims.identity,
                                            "changes": {k: str(v) for k, v in changes.items()}})
    return web.json_response(room_view(room))


@room_route
async def close_room(request: web.Request, node: Node, room: Room,
                     claims: Claims) -> web.Response:
    node.rooms.close_room(room.name, "room closed by an administrator")
    return web.json_response({"closed": room.name})


@participant_route
async def remove_participant(request: web.Request, node: Node, room: Room, p: Participant,
                             body: dict[str, Any]) -> web.Response:
    reason = str(body.get("reason") or request.query.get("reason") or
                 "removed by an administrator")
    node.rooms.remove(room.name, p.id, reason=reason, by=None)
    return web.json_response({"removed": p.id})


@participant_route
async def update_participant(request: web.Request, node: Node, room: Room, p: Participant,
                             body: dict[str, Any]) -> web.Response:
    name, metadata = body.get("name"), body.get("metadata")
    if (name is not None and not isinstance(name, str)) or \
            (metadata is not None and not isinstance(metadata, str)):
        return json_error(400, ErrorCode.INVALID_MESSAGE, "name and metadata must be strings")
    moderation.update_participant(room, None, p.id, name=name, metadata=metadata)
    return web.json_response(p.info().to_wire())


@participant_route
async def mute_track(request: web.Request, node: Node, room: Room, p: Participant,
                     body: dict[str, Any]) -> web.Response:
    track = body.get("track")
    if not isinstance(track, str) or track not in p.tracks:
        return json_error(404, ConferenceCode.UNKNOWN_TRACK, "no such track of this participant")
    info = moderation.set_track_muted(room, None, TrackId(track), bool(body.get("muted", True)))
    return web.json_response(info.to_wire())


@participant_route
async def approve(request: web.Request, node: Node, room: Room, p: Participant,
                  body: dict[str, Any]) -> web.Response:
    room.stage.decide(None, p.id, True, str(body.get("reason", "")))
    return web.json_response(p.info().to_wire())


@participant_route
async def deny(request: web.Request, node: Node, room: Room, p: Participant,
               body: dict[str, Any]) -> web.Response:
    room.stage.decide(None, p.id, False, str(body.get("reason", "")))
    return web.json_response(p.info().to_wire())


@participant_route
async def invite(request: web.Request, node: Node, room: Room, p: Participant,
                 body: dict[str, Any]) -> web.Response:
    room.stage.invite(None, p.id, str(body.get("message", "")))
    return web.json_response({"invited": p.id})


@participant_route
async def demote(request: web.Request, node: Node, room: Room, p: Participant,
                 body: dict[str, Any]) -> web.Response:
    room.stage.demote(None, p.id, str(body.get("reason", "")))
    return web.json_response(p.info().to_wire())


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    base = "/api/rooms/{room}/participants/{identity}"
    r.add_get("/api/rooms", list_rooms)
    r.add_get("/api/rooms/{room}", get_room)
    r.add_patch("/api/rooms/{room}", update_room)
    r.add_delete("/api/rooms/{room}", close_room)
    r.add_delete(base, remove_participant)
    r.add_patch(base, update_participant)
    r.add_post(base + "/mute", mute_track)
    r.add_post(base + "/approve", approve)
    r.add_post(base + "/deny", deny)
    r.add_post(base + "/invite", invite)
    r.add_post(base + "/demote", demote)
