"""The dispatch table: one small handler per client message type."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from conference import moderation
from conference.errors import ConferenceError
from conference.events import LeaveReason
from conference.ids import Identity, ParticipantId, TrackId
from conference.manager import JoinRequest
from signaling import __version__
from signaling.errors import CloseCode, ErrorCode, SignalError
from signaling.ice import ice_servers
from signaling.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS, ClientMessage
from signaling.stage_handlers import STAGE_HANDLERS

if TYPE_CHECKING:
    from conference.media import RoomMedia
    from signaling.session import SignalSession

Handler = Callable[["SignalSession", ClientMessage], Awaitable[None]]

_AUTH_CLOSE = CloseCode.AUTH_FAILED


async def handle_join(s: SignalSession, m: ClientMessage) -> None:
    started = time.perf_counter()
    if s.participant is not None:
        raise SignalError(ErrorCode.ALREADY_JOINED, "already joined", m.id)
    version = m.body.get("version", PROTOCOL_VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise SignalError(ErrorCode.UNSUPPORTED_VERSION,
                          f"protocol version {version} not supported; "
                          f"supported: {list(SUPPORTED_VERSIONS)}", m.id)
    node = s.node
    try:
        claims = node.verifier.verify(m.body.get("token") or s.url_token)
        wanted = m.body.get("room") or s.url_room
        if wanted is not None and wanted != claims.grants.room:
            raise SignalError(ErrorCode.WRONG_ROOM, "the token is for another room")
        if claims.grants.room == "*":
            raise SignalError(ErrorCode.WRONG_ROOM,
                              "a token for every room (\"*\") is for the admin API only")
        if not claims.grants.room_join:
            raise SignalError(ErrorCode.JOIN_NOT_ALLOWED, "the token does not grant room_join")
    except SignalError as err:
        node.metrics.auth_failures.labels(reason=err.code.value).inc()
        s.send_error(err.code, err.message, m.id)
        s.close(_AUTH_CLOSE, err.code.value)
        return
    try:
        room, participant = await node.rooms.join(JoinRequest(
            room=claims.grants.room, identity=claims.identity, name=claims.name,
            metadata=claims.metadata, grants=claims.grants, sink=s.deliver,
            token_id=claims.token_id, token_expires=claims.expires_at,
            media=bool(m.body.get("media", True)) and node.config.sfu.enabled))
    except ConferenceError as err:
        s.send_error(ErrorCode(err.code.value), err.message, m.id)
        s.close(CloseCode.JOIN_REFUSED, err.code.value)
        return
    s.joined(room, participant)
    s.reply(m.id, {
        "type": "joined",
        "version": version,
        "room": room.name,
        "participant": participant.info().to_wire(),
        "participants": [p.info().to_wire() for p in room.visible_participants(participant.id)],
        "grants": participant.grants.to_wire(),
        "ice_servers": ice_servers(node.config.ice, participant.identity),
        "room_options": {"max_speakers": room.options.max_speakers,
                         "stage_policy": room.options.stage_policy.value},
        "speaker_requests": [
            {"participant": rp.info().to_wire(), "message": msg, "expires_at": exp}
            for rp, msg, exp in room.stage.pending_requests()
        ] if participant.grants.room_admin else [],
        "server": {"version": __version__, "node": node.id, "protocol": PROTOCOL_VERSION},
    })
    node.metrics.join_latency.observe(time.perf_counter() - started)


async def handle_leave(s: SignalSession, m: ClientMessage) -> None:
    s.reply(m.id, {"type": "left"})
    s.leave_room(LeaveReason.CLIENT_LEFT)
    s.close(CloseCode.NORMAL, "left")


async def handle_ping(s: SignalSession, m: ClientMessage) -> None:
    s.reply(m.id, {"type": "pong", "time": time.time()})


async def handle_update(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.update_participant(p.id, name=m.body.get("name"), metadata=m.body.get("metadata"))
    s.reply(m.id, {"type": "updated", "participant": p.info().to_wire()})


async def handle_remove_track(s: SignalSession, m: ClientMessage) -> None:
    """Unpublish: the room is told and, with media, forwarding stops at once."""
    room, p = s.require_participant()
    track = room.remove_track(p.id, TrackId(m.body["track"]))
    if room.media is not None:
        room.media.unpublish(p.id, track.id)
    s.reply(m.id, {"type": "track-removed", "track": track.to_wire()})


async def handle_mute_track(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    tid = TrackId(m.body["track"])
    if tid not in p.tracks:  # someone else's track: a moderator action
        track = moderation.set_track_muted(room, p.id, tid, m.body["muted"])
        s.reply(m.id, {"type": "track-updated", "track": track.to_wire()})
        return
    track = room.set_track_muted(p.id, tid, m.body["muted"])
    if room.media is not None:
        room.media.set_muted(p.id, track.id, track.muted)
    s.reply(m.id, {"type": "track-updated", "track": track.to_wire()})


def _media(s: SignalSession) -> tuple[RoomMedia, ParticipantId]:
    room, p = s.require_participant()
    if room.media is None:
        raise SignalError(ErrorCode.MEDIA_DISABLED, "media is off on this node")
    return room.media, p.id


def _track_meta(raw: list[Any] | None, msg_id: str | None) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for item in raw or []:
        if not isinstance(item, dict) or not isinstance(item.get("mid"), str):
            raise SignalError(ErrorCode.INVALID_MESSAGE,
                              "offer: tracks must be objects with a string mid", msg_id)
        meta[item["mid"]] = {"source": str(item.get("source", ""))[:32],
                             "name": str(item.get("name", ""))[:256]}
    return meta


async def handle_offer(s: SignalSession, m: ClientMessage) -> None:
    media, pid = _media(s)
    meta = _track_meta(m.body.get("tracks"), m.id)
    answer, new = await media.publish(pid, m.body["sdp"], meta)
    _, p = s.require_participant()
    s.reply(m.id, {"type": "answer", "target": "publisher", "sdp": answer,
                   "tracks": [p.tracks[t].to_wire() | {"mid": media.mid_of(pid, t)}
                              for t in new if t in p.tracks]})


async def handle_answer(s: SignalSession, m: ClientMessage) -> None:
    media, pid = _media(s)
    await media.answer(pid, m.body["sdp"])
    if m.id is not None:
        s.reply(m.id, {"type": "answer-accepted"})


async def handle_candidate(s: SignalSession, m: ClientMessage) -> None:
    media, pid = _media(s)
    target = m.body["target"]
    candidate = m.body.get("candidate")
    if candidate is not None and not isinstance(candidate, dict):
        raise SignalError(ErrorCode.INVALID_CANDIDATE, "candidate must be an object or null",
                          m.id)
    await media.candidate(pid, target, candidate)


async def handle_subscription(s: SignalSession, m: ClientMessage) -> None:
    media, pid = _media(s)
    state = m.body["state"]
    if state not in ("subscribed", "paused", "unsubscribed"):
        raise SignalError(ErrorCode.INVALID_MESSAGE,
                          "state must be subscribed, paused or unsubscribed", m.id)
    media.set_subscription(pid, TrackId(m.body["track"]), state)
    s.reply(m.id, {"type": "subscription-updated", "track": m.body["track"], "state": state})


async def handle_data(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    to = m.body.get("to")
    if to is not None and not all(isinstance(i, str) for i in to):
        raise SignalError(ErrorCode.INVALID_MESSAGE, "data: to must be a list of identities",
                          m.id)
    delivered = room.send_data(
        p.id, m.body["payload"], topic=m.body.get("topic", ""),
        to=[Identity(i) for i in to] if to is not None else None)
    if m.id is not None:
        s.reply(m.id, {"type": "data-sent", "delivered": delivered})


HANDLERS: dict[str, Handler] = {
    "join": handle_join,
    "leave": handle_leave,
    "ping": handle_ping,
    "update": handle_update,
    "remove-track": handle_remove_track,
    "mute-track": handle_mute_track,
    "data": handle_data,
    "offer": handle_offer,
    "answer": handle_answer,
    "candidate": handle_candidate,
    "subscription": handle_subscription,
    **STAGE_HANDLERS,
}


async def dispatch(s: SignalSession, m: ClientMessage) -> None:
    if m.type != "join" and m.type != "ping" and s.participant is None:
        raise SignalError(ErrorCode.NOT_JOINED, "join first", m.id)
    await HANDLERS[m.type](s, m)
