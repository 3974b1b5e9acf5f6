"""The stage through the wire: roles, requests to speak, invitations, demotion, moderation.

Signalling-only clients (``media: false``) against a real node; media is in
tests/e2e/test_roles_media.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jwt
import pytest

from conference.config import RoomConfig
from conference.ids import RoomName
from conference.room import Room
from tests.conftest import KEY, SECRET, Client, NodeHarness, StartNode, token


class Wire:
    """A joined client that keeps the events it reads past while waiting for a reply."""

    def __init__(self, client: Client, joined: dict[str, Any]) -> None:
        self.client = client
        self.joined = joined
        self.inbox: list[dict[str, Any]] = []

    @property
    def id(self) -> str:
        return str(self.joined["participant"]["id"])

    async def call(self, **msg: Any) -> dict[str, Any]:
        msg_id = await self.client.send(**msg)
        while True:
            reply = await self.client.recv()
            if reply.get("id") == msg_id:
                return reply
            self.inbox.append(reply)

    async def refused(self, code: str, **msg: Any) -> dict[str, Any]:
        reply = await self.call(**msg)
        assert (reply["type"], reply["code"]) == ("error", code), reply
        return reply

    async def acked(self, **msg: Any) -> None:
        reply = await self.call(**msg)
        assert (reply["type"], reply["action"]) == ("ack", msg["type"]), reply

    async def event(self, mtype: str, timeout: float = 5.0) -> dict[str, Any]:
        for i, seen in enumerate(self.inbox):
            if seen["type"] == mtype:
                return self.inbox.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.client.recv(max(0.01, deadline - loop.time()))
            if msg["type"] == mtype:
                return msg
            self.inbox.append(msg)

    async def quiet(self, mtype: str, wait: float = 0.2) -> None:
        """Nothing of ``mtype`` arrived (a ping round trip flushes what was queued)."""
        await asyncio.sleep(wait)
        await self.call(type="ping")
        assert [m for m in self.inbox if m["type"] == mtype] == []


async def join(node: NodeHarness, identity: str, room: str = "r1", **mint: Any) -> Wire:
    client = await node.connect()
    return Wire(client, await client.join(token(room, identity, **mint)))


def room_of(node: NodeHarness, name: str = "r1") -> Room:
    room = node.node.rooms.get(RoomName(name))
    assert room is not None
    return room


def grants_of(node: NodeHarness, identity: str) -> dict[str, Any]:
    p = room_of(node).by_identity(identity)  # type: ignore[arg-type]
    assert p is not None
    return p.grants.to_wire()


async def refused_join(node: NodeHarness, tok: str, code: str) -> None:
    client = await node.connect()
    await client.send(type="join", token=tok, media=False)
    error = await client.expect("error")
    assert error["code"] == code
    close = await client.closed()
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 4009)


ROLE_TABLE = {  # docs/auth.md
    "listener": {"can_publish": False, "can_publish_data": True,
                 "can_request_publish": True, "room_admin": False},
    "speaker": {"can_publish": True, "can_publish_data": True,
                "can_request_publish": False, "room_admin": False},
    "moderator": {"can_publish": True, "can_publish_data": True,
                  "can_request_publish": False, "room_admin": True},
}


@pytest.mark.parametrize("role", list(ROLE_TABLE))
async def test_role_in_the_token_sets_the_grants_of_the_joined_reply(
        node: NodeHarness, role: str) -> None:
    w = await join(node, "alice", role=role)
    expected = {"room": "r1", "room_join": True, "can_subscribe": True, "hidden": False,
                **ROLE_TABLE[role]}
    assert w.joined["grants"] == expected
    assert w.joined["participant"]["grants"] == expected


async def test_explicit_grants_override_the_role_and_others_see_them(node: NodeHarness) -> None:
    lee = await join(node, "lee", role="listener",
                     grants={"can_publish": True, "can_publish_data": False})
    assert lee.joined["grants"] == {
        "room": "r1", "room_join": True, "can_subscribe": True, "hidden": False,
        "can_publish": True, "can_publish_data": False, "can_request_publish": True,
        "room_admin": False}
    bob = await join(node, "bob", role="listener")
    [seen] = bob.joined["participants"]
    assert seen["identity"] == "lee" and seen["grants"] == lee.joined["grants"]
    await lee.refused("permission_denied", type="data", payload="hi")
    assert (await bob.call(type="data", payload="hi"))["type"] == "data-sent"


async def test_listener_without_the_data_grant_cannot_send_data(node: NodeHarness) -> None:
    sam = await join(node, "sam")
    lee = await join(node, "lee", role="listener", grants={"can_publish_data": False})
    await lee.refused("permission_denied", type="data", payload={"text": "hi"})
    await sam.quiet("data")


async def test_moderator_approves_a_request_and_the_listener_may_publish(
        node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    vic = await join(node, "vic", role="listener")
    status = await lee.call(type="request-to-speak", message="may I?")
    assert (status["type"], status["status"]) == ("speaker-request-status", "pending")
    request = await mod.event("speaker-request")
    assert request["participant"]["id"] == lee.id and request["message"] == "may I?"
    assert request["expires_at"] > time.time()
    await vic.quiet("speaker-request")  # only moderators are asked
    await mod.acked(type="approve-speaker", participant=lee.id, reason="go ahead")
    changed = await lee.event("permission-changed")
    assert changed["grants"]["can_publish"] is True
    assert changed["grants"]["can_request_publish"] is False
    assert (changed["by"], changed["reason"]) == (mod.id, "go ahead")
    for w in (lee, mod):
        result = await w.event("speaker-request-result")
        assert (result["participant"], result["outcome"], result["by"]) == (
            lee.id, "approved", mod.id)
    updated = await vic.event("participant-updated")
    assert updated["participant"]["id"] == lee.id
    assert updated["participant"]["grants"]["can_publish"] is True
    assert grants_of(node, "lee") == changed["grants"]


async def test_denied_request_leaves_the_grants_unchanged(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    before = grants_of(node, "lee")
    await lee.call(type="request-to-speak")
    await mod.event("speaker-request")
    await mod.acked(type="deny-speaker", participant=lee.id, reason="not now")
    result = await lee.event("speaker-request-result")
    assert (result["outcome"], result["by"], result["reason"]) == ("denied", mod.id, "not now")
    await lee.quiet("permission-changed")
    assert grants_of(node, "lee") == before
    await mod.refused("no_pending_request", type="approve-speaker", participant=lee.id)


async def test_auto_policy_approves_at_once_without_a_moderator(start_node: StartNode) -> None:
    node = await start_node(rooms=RoomConfig(stage_policy="auto"))
    lee = await join(node, "lee", role="listener")
    assert lee.joined["room_options"] == {"max_speakers": 0, "stage_policy": "auto"}
    status = await lee.call(type="request-to-speak", message="hi")
    assert status["status"] == "approved"
    assert (await lee.event("permission-changed"))["grants"]["can_publish"] is True
    result = await lee.event("speaker-request-result")
    assert (result["outcome"], result["by"]) == ("approved", None)


async def test_unanswered_request_times_out_with_a_reason(start_node: StartNode) -> None:
    node = await start_node(rooms=RoomConfig(speaker_request_timeout=0.3))
    lee = await join(node, "lee", role="listener")
    assert (await lee.call(type="request-to-speak"))["status"] == "pending"
    result = await lee.event("speaker-request-result", timeout=2.0)
    assert (result["outcome"], result["by"]) == ("timeout", None)
    assert "in time" in result["reason"]
    assert grants_of(node, "lee")["can_publish"] is False
    assert (await lee.call(type="request-to-speak"))["status"] == "pending"  # may ask again


async def test_cancelled_request_is_withdrawn_and_moderators_are_told(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    await lee.call(type="request-to-speak")
    await mod.event("speaker-request")
    status = await lee.call(type="cancel-speaker-request")
    assert (status["type"], status["status"]) == ("speaker-request-status", "cancelled")
    for w in (lee, mod):
        result = await w.event("speaker-request-result")
        assert (result["participant"], result["outcome"], result["by"]) == (
            lee.id, "cancelled", lee.id)
    await mod.refused("no_pending_request", type="approve-speaker", participant=lee.id)
    await lee.refused("no_pending_request", type="cancel-speaker-request")


async def test_request_is_refused_twice_for_speakers_and_without_the_grant(
        node: NodeHarness) -> None:
    lee = await join(node, "lee", role="listener")
    await lee.call(type="request-to-speak")
    await lee.refused("already_requested", type="request-to-speak")
    sam = await join(node, "sam", role="speaker")
    await sam.refused("already_speaker", type="request-to-speak")
    mute = await join(node, "mute", role="listener", grants={"can_request_publish": False})
    await mute.refused("permission_denied", type="request-to-speak")


async def test_speaker_cap_refuses_joins_and_approvals(start_node: StartNode) -> None:
    node = await start_node(rooms=RoomConfig(max_speakers=1))
    sam = await join(node, "sam", role="speaker")
    await refused_join(node, token("r1", "sue", role="speaker"), "stage_full")
    mod = await join(node, "mod", role="moderator", grants={"can_publish": False})
    lee = await join(node, "lee", role="listener")
    await lee.call(type="request-to-speak")
    await mod.refused("stage_full", type="approve-speaker", participant=lee.id)
    assert grants_of(node, "lee")["can_publish"] is False
    await sam.call(type="leave")
    await mod.acked(type="approve-speaker", participant=lee.id)  # still pending, now fits
    assert (await lee.event("permission-changed"))["grants"]["can_publish"] is True


async def test_invitation_changes_nothing_until_accepted(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    vic = await join(node, "vic", role="listener")
    await mod.acked(type="invite-to-stage", participant=lee.id, message="join us")
    invite = await lee.event("stage-invite")
    assert (invite["by"], invite["message"]) == (mod.id, "join us")
    await vic.quiet("participant-updated")
    assert grants_of(node, "lee")["can_publish"] is False
    await lee.acked(type="respond-to-invite", accept=True)
    changed = await lee.event("permission-changed")
    assert changed["grants"]["can_publish"] is True
    result = await mod.event("stage-invite-result")
    assert (result["participant"], result["outcome"], result["by"]) == (lee.id, "accepted",
                                                                         lee.id)
    assert (await lee.event("stage-invite-result"))["outcome"] == "accepted"
    assert (await vic.event("participant-updated"))["participant"]["grants"]["can_publish"]
    await lee.refused("no_pending_request", type="respond-to-invite", accept=True)


async def test_declined_invitation_and_non_moderator_invites(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    sam = await join(node, "sam", role="speaker")
    await mod.acked(type="invite-to-stage", participant=lee.id)
    await lee.event("stage-invite")
    await lee.acked(type="respond-to-invite", accept=False)
    result = await mod.event("stage-invite-result")
    assert (result["participant"], result["outcome"], result["by"]) == (lee.id, "declined",
                                                                         lee.id)
    await lee.quiet("permission-changed")
    assert grants_of(node, "lee")["can_publish"] is False
    for w in (sam, lee):
        await w.refused("permission_denied", type="invite-to-stage", participant=mod.id)
    await mod.refused("already_speaker", type="invite-to-stage", participant=sam.id)


async def test_move_to_audience_takes_the_grant(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    sam = await join(node, "sam", role="speaker")
    lee = await join(node, "lee", role="listener")
    await lee.refused("permission_denied", type="move-to-audience", participant=sam.id)
    await mod.acked(type="move-to-audience", participant=sam.id, reason="time is up")
    changed = await sam.event("permission-changed")
    assert changed["grants"]["can_publish"] is False
    assert changed["grants"]["can_request_publish"] is True
    assert (changed["by"], changed["reason"]) == (mod.id, "time is up")
    updated = (await lee.event("participant-updated"))["participant"]
    assert (updated["id"], updated["grants"]["can_publish"]) == (sam.id, False)
    assert grants_of(node, "sam") == changed["grants"]
    await mod.refused("not_a_speaker", type="move-to-audience", participant=sam.id)


async def test_removed_participant_is_told_why_and_its_token_is_barred(
        node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    ann = await join(node, "ann", role="listener")
    await ann.refused("permission_denied", type="remove-participant", participant=mod.id)
    await mod.refused("unknown_participant", type="remove-participant", participant="PA_nope")
    bob_token = token("r1", "bob", role="speaker")
    bob = Wire(await node.connect(), {})
    bob.joined = await bob.client.join(bob_token)
    await mod.acked(type="remove-participant", participant=bob.id, reason="spam")
    seen = []
    while (msg := await bob.client.recv())["type"] != "disconnect":
        seen.append(msg)
    assert [m for m in seen if m["type"] == "removed"] == [
        {"type": "removed", "by": mod.id, "reason": "spam", "seq": seen[-1]["seq"]}]
    assert msg["reason"] == "removed"
    close = await bob.client.closed()
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 4006)
    left = await ann.event("participant-left")
    assert (left["participant"], left["reason"]) == (bob.id, "removed")
    await refused_join(node, bob_token, "removed_from_room")
    again = await join(node, "bob", role="speaker")
    assert again.joined["participant"]["identity"] == "bob"


async def test_only_a_moderator_updates_another_participant(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    ann = await join(node, "ann", role="listener")
    await mod.acked(type="update-participant", participant=ann.id, name="Ann B",
                    metadata='{"seat": 3}')
    for w in (ann, mod):
        updated = (await w.event("participant-updated"))["participant"]
        assert (updated["id"], updated["name"], updated["metadata"]) == (
            ann.id, "Ann B", '{"seat": 3}')
    await ann.refused("permission_denied", type="update-participant", participant=mod.id,
                      name="X")
    assert room_of(node).by_identity("mod").name == "mod"  # type: ignore[arg-type,union-attr]


async def test_each_stage_change_is_one_audit_record(
        node: NodeHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="parley.stage")
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    lia = await join(node, "lia", role="listener")
    await lee.call(type="request-to-speak", message="please")
    await mod.acked(type="approve-speaker", participant=lee.id)
    await mod.acked(type="move-to-audience", participant=lee.id)
    await mod.acked(type="invite-to-stage", participant=lia.id)
    await lia.acked(type="respond-to-invite", accept=False)
    records = [r for r in caplog.records if r.name == "parley.stage"]
    assert [(r.action, r.participant, r.by) for r in records] == [  # type: ignore[attr-defined]
        ("request", lee.id, None),
        ("promoted", lee.id, mod.id),
        ("request-approved", lee.id, mod.id),
        ("demoted", lee.id, mod.id),
        ("invite", lia.id, mod.id),
        ("invite-declined", lia.id, lia.id),
    ]
    assert all(r.room == "r1" for r in records)  # type: ignore[attr-defined]
    assert records[0].text == "please"  # type: ignore[attr-defined]


async def test_a_respelled_token_without_jti_is_still_barred(node: NodeHarness) -> None:
    """Base64url lets a signature end in '=' and still verify: the bar is on the claims."""
    mod = await join(node, "mod", role="moderator")
    now = int(time.time())
    bob_token = jwt.encode({"iss": KEY, "sub": "bob", "iat": now, "exp": now + 600,
                            "grants": {"room": "r1", "role": "speaker"}}, SECRET,
                           algorithm="HS256")
    bob = Wire(await node.connect(), {})
    bob.joined = await bob.client.join(bob_token)
    await mod.acked(type="remove-participant", participant=bob.id, reason="spam")
    await bob.client.closed()
    for spelling in (bob_token, bob_token + "="):
        await refused_join(node, spelling, "removed_from_room")


async def test_a_hidden_participant_cannot_ask_to_speak(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    ghost = await join(node, "ghost", role="listener", grants={"hidden": True})
    await ghost.refused("permission_denied", type="request-to-speak", message="hi")
    assert room_of(node).stage.requests == {}  # type: ignore[union-attr]
    await mod.client.send(type="ping")
    assert (await mod.client.recv())["type"] == "pong"  # no speaker-request came first
