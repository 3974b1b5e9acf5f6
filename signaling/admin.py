"""The admin HTTP API for backends: rooms, participants, stage and moderation.

Every request carries ``Authorization: Bearer <join token>`` whose grants have
``room_admin``; ``grants.room`` is the room it covers, or ``*`` for all.
Errors are ``{"code", "message"}`` with the same codes as the wire protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from aiohttp import web

from conference import moderation
from conference.config import StagePolicy
from conference.errors import ConferenceCode, ConferenceError
from conference.ids import Identity, RoomName, TrackId
from conference.participant import Participant
from conference.room import Room
from signaling.appkeys import NODE, RELAY
from signaling.auth import Claims
from signaling.errors import ErrorCode, SignalError, WireCode
from signaling.node import Node
from signaling.relay import Relay, claims_from_wire, claims_to_wire

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


_decoder = msgspec.json.Decoder()
"""Strict JSON, as on the socket: ``NaN``, ``Infinity`` and numbers beyond a double are
refused (Python's ``json`` would accept the first two)."""


def _bad_request(code: ErrorCode, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"code": code.value, "message": message}),
                              content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` without a body)."""
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _bad_request(ErrorCode.MALFORMED_JSON, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _bad_request(ErrorCode.INVALID_MESSAGE, "the body must be a JSON object")
    return data


@dataclass(frozen=True, kw_only=True)
class AdminCall:
    """One authorised admin action, as it travels to the room's owner when the room lives
    on another node (the claims were verified by the node that took the request)."""

    action: str
    """The action's name (``_ACTIONS``)."""
    room: RoomName
    identity: Identity | None
    body: dict[str, Any]
    query: dict[str, str]
    path: str
    claims: Claims

    def to_wire(self) -> dict[str, Any]:
        return {"action": self.action, "room": self.room, "identity": self.identity,
                "body": self.body, "query": self.query, "path": self.path,
                "claims": claims_to_wire(self.claims)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AdminCall:
        identity = data.get("identity")
        return cls(action=str(data["action"]), room=RoomName(data["room"]),
                   identity=None if identity is None else Identity(identity),
                   body=dict(data["body"]), query=dict(data["query"]), path=str(data["path"]),
                   claims=claims_from_wire(data["claims"]))


RoomAction = Callable[[AdminCall, Node, Room, Claims], Awaitable[web.Response]]
ParticipantAction = Callable[[AdminCall, Node, Room, Participant, dict[str, Any]],
                             Awaitable[web.Response]]
_ACTIONS: dict[str, RoomAction] = {}
"""Every room action by name: what a forwarded call names."""


async def run_call(node: Node, call: AdminCall) -> web.Response:
    """Run an authorised action on a room this node holds."""
    room = node.rooms.get(call.room)
    if room is None:
        return json_error(404, ErrorCode.UNKNOWN_ROOM, "no such room")
    try:
        return await _ACTIONS[call.action](call, node, room, call.claims)
    except ConferenceError as err:
        return json_error(_STATUS.get(err.code, 400), err.code, err.message)


async def _dispatch(request: web.Request, call: AdminCall) -> web.Response:
    """Here if the room is here, else at its owner (over the bus), else 404."""
    node = request.app[NODE]
    relay = request.app.get(RELAY)
    if node.rooms.get(call.room) is not None or relay is None or node.cluster is None:
        return await run_call(node, call)
    try:
        owner = await node.cluster.placement.owner(call.room)
        if owner is None or owner == node.id:
            return await run_call(node, call)
        answer = await relay.request(owner, "admin", call.to_wire())
    except ConferenceError as err:
        return json_error(503, err.code, err.message)
    return web.Response(status=int(answer["status"]), text=str(answer["body"]),
                        content_type="application/json")


def serve_forwarded(relay: Relay, node: Node) -> None:
    """Answer admin calls forwarded by other nodes, and their room listings."""
    async def admin(body: Any) -> dict[str, Any]:
        response = await run_call(node, AdminCall.from_wire(body))
        return {"status": response.status, "body": response.text}

    async def rooms(body: Any) -> dict[str, int]:
        return {name: len(room) for name, room in node.rooms.rooms.items()}

    relay.serve("admin", admin)
    relay.serve("rooms", rooms)


def room_route(action: RoomAction) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Authorise, then run the action where the room lives; conference errors become HTTP."""
    _ACTIONS[action.__name__] = action

    async def handler(request: web.Request) -> web.Response:
        name = RoomName(request.match_info["room"])
        claims = _claims(request, name)
        if isinstance(claims, web.Response):
            return claims
        identity = request.match_info.get("identity")
        body = await _body(request) if request.method != "GET" else {}
        return await _dispatch(request, AdminCall(
            action=action.__name__, room=name,
            identity=None if identity is None else Identity(identity), body=body,
            query=dict(request.query), path=request.path, claims=claims))
    return handler


def participant_route(action: ParticipantAction) -> Callable[[web.Request],
                                                              Awaitable[web.Response]]:
    async def room_action(call: AdminCall, node: Node, room: Room,
                          claims: Claims) -> web.Response:
        participant = room.by_identity(Identity(call.identity or ""))
        if participant is None:
            return json_error(404, ConferenceCode.UNKNOWN_PARTICIPANT,
                              "no such participant in this room")
        log.info("admin action", extra={"room": room.name, "participant": participant.id,
                                        "action": call.path, "by": claims.identity})
        return await action(call, node, room, participant, call.body)
    room_action.__name__ = action.__name__
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
    """Every room of the cluster (from the registry), with its owner; participant counts
    come from each owner (``null`` when it does not answer in time)."""
    claims = _claims(request, None)
    if isinstance(claims, web.Response):
        return claims
    node = request.app[NODE]
    relay = request.app.get(RELAY)
    entries = {n: {"name": n, "num_participants": len(r), "node": node.id}
               for n, r in node.rooms.rooms.items()}
    if relay is not None:
        try:
            owners = await node.registry.rooms()
        except ConferenceError as err:
            return json_error(503, err.code, err.message)
        others = sorted({o for o in owners.values() if o != node.id})
        answers = await asyncio.gather(*(relay.request(o, "rooms", None) for o in others),
                                       return_exceptions=True)
        counts = {o: a for o, a in zip(others, answers, strict=True) if isinstance(a, dict)}
        for name, owner in owners.items():
            if owner != node.id:
                entries[name] = {"name": name, "node": owner,
                                 "num_participants": counts.get(owner, {}).get(name)}
    names = sorted(n for n in entries if claims.grants.room in ("*", n))
    return web.json_response({"rooms": [entries[n] for n in names]})


@room_route
async def get_room(call: AdminCall, node: Node, room: Room, claims: Claims) -> web.Response:
    return web.json_response(room_view(room) | {"node": node.id})


_NUMBER_OPTIONS: dict[str, tuple[type, float, float]] = {
    "max_speakers": (int, 0, 1000),
    "speaker_request_timeout": (float, 1.0, 3600.0),
}
"""Room options that are numbers: their type and inclusive range."""
_BACKEND_ONLY_OPTIONS = ("moderator_can_unmute",)
"""Options that widen what moderators may do to others: only a token that cannot join the
room (an application backend's) may change them."""


def room_option_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The validated room options in ``body``; ``ValueError`` names the first bad one."""
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name in _NUMBER_OPTIONS:
            kind, low, high = _NUMBER_OPTIONS[name]
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or (kind is int and not isinstance(value, int)) \
                    or not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"{name}: {'an integer' if kind is int else 'a number'} "
                                 f"from {low:g} to {high:g}")
            changes[name] = kind(value)
        elif name == "stage_policy":
            if value not in {p.value for p in StagePolicy}:
                raise ValueError(f"stage_policy: one of {', '.join(StagePolicy)}")
            changes[name] = StagePolicy(value)
        elif name == "moderator_can_unmute":
            if not isinstance(value, bool):
                raise ValueError("moderator_can_unmute: true or false")
            changes[name] = value
        else:
            raise ValueError(f"unknown room option {name!r}")
    return changes


@room_route
async def update_room(call: AdminCall, node: Node, room: Room,
                      claims: Claims) -> web.Response:
    body = call.body
    try:
        changes = room_option_changes(body)
    except ValueError as exc:
        return json_error(400, ErrorCode.INVALID_MESSAGE, f"bad room option: {exc}")
    widened = [name for name in _BACKEND_ONLY_OPTIONS
               if name in changes and changes[name] != getattr(room.options, name)]
    if widened and claims.grants.room_join:
        return json_error(403, ConferenceCode.PERMISSION_DENIED,
                          f"{', '.join(widened)} may only be changed with a backend token "
                          "(one that cannot join: room_join false)")
    room.options = replace(room.options, **changes)
    log.info("room options changed", extra={"room": room.name, "by": claims.identity,
                                            "changes": {k: str(v) for k, v in changes.items()}})
    return web.json_response(room_view(room) | {"node": node.id})


@room_route
async def close_room(call: AdminCall, node: Node, room: Room,
                     claims: Claims) -> web.Response:
    node.rooms.close_room(room.name, "room closed by an administrator")
    return web.json_response({"closed": room.name})


@participant_route
async def remove_participant(call: AdminCall, node: Node, room: Room, p: Participant,
                             body: dict[str, Any]) -> web.Response:
    reason = str(body.get("reason") or call.query.get("reason") or
                 "removed by an administrator")
    node.rooms.remove(room.name, p.id, reason=reason, by=None)
    return web.json_response({"removed": p.id})


@participant_route
async def update_participant(call: AdminCall, node: Node, room: Room, p: Participant,
                             body: dict[str, Any]) -> web.Response:
    name, metadata = body.get("name"), body.get("metadata")
    if (name is not None and not isinstance(name, str)) or \
            (metadata is not None and not isinstance(metadata, str)):
        return json_error(400, ErrorCode.INVALID_MESSAGE, "name and metadata must be strings")
    moderation.update_participant(room, None, p.id, name=name, metadata=metadata)
    return web.json_response(p.info().to_wire())


@participant_route
async def mute_track(call: AdminCall, node: Node, room: Room, p: Participant,
                     body: dict[str, Any]) -> web.Response:
    track = body.get("track")
    if not isinstance(track, str) or track not in p.tracks:
        return json_error(404, ConferenceCode.UNKNOWN_TRACK, "no such track of this participant")
    info = moderation.set_track_muted(room, None, TrackId(track), bool(body.get("muted", True)))
    return web.json_response(info.to_wire())


@participant_route
async def approve(call: AdminCall, node: Node, room: Room, p: Participant,
                  body: dict[str, Any]) -> web.Response:
    room.stage.decide(None, p.id, True, str(body.get("reason", "")))
    return web.json_response(p.info().to_wire())


@participant_route
async def deny(call: AdminCall, node: Node, room: Room, p: Participant,
               body: dict[str, Any]) -> web.Response:
    room.stage.decide(None, p.id, False, str(body.get("reason", "")))
    return web.json_response(p.info().to_wire())


@participant_route
async def invite(call: AdminCall, node: Node, room: Room, p: Participant,
                 body: dict[str, Any]) -> web.Response:
    room.stage.invite(None, p.id, str(body.get("message", "")))
    return web.json_response({"invited": p.id})


@participant_route
async def demote(call: AdminCall, node: Node, room: Room, p: Participant,
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
