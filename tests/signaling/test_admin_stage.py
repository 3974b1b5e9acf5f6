"""The admin HTTP API's stage and moderation actions, with real bearer tokens and clients."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiortc.mediastreams import VideoStreamTrack

from client.client import ParleyClient
from conference.ids import RoomName
from tests.conference.test_stage import Wire, grants_of, join, refused_join
from tests.conftest import NodeHarness, token
from tests.media_helpers import media_node

ADMIN = token("r1", "ops", role="moderator", grants={"room_join": False})
EVERYWHERE = token("*", "ops", role="moderator", grants={"room_join": False})
BASE = "/api/rooms/r1/participants"


async def call(node: NodeHarness, method: str, path: str, body: Any = None,
               tok: str = ADMIN) -> tuple[int, Any]:
    async with node.http.request(method, node.url(path), json=body,
                                 headers={"Authorization": f"Bearer {tok}"}) as resp:
        return resp.status, await resp.json()


async def test_admin_approves_and_denies_pending_requests(node: NodeHarness) -> None:
    mod = await join(node, "mod", role="moderator")
    lee = await join(node, "lee", role="listener")
    lia = await join(node, "lia", role="listener")
    await lee.call(type="request-to-speak")
    await lia.call(type="request-to-speak")
    status, room = await call(node, "GET", "/api/rooms/r1")
    assert status == 200
    assert sorted(r["participant"] for r in room["speaker_requests"]) == sorted([lee.id, lia.id])
    status, body = await call(node, "POST", f"{BASE}/lee/approve", {"reason": "welcome"})
    assert (status, body["id"], body["grants"]["can_publish"]) == (200, lee.id, True)
    changed = await lee.event("permission-changed")
    assert (changed["grants"]["can_publish"], changed["by"], changed["reason"]) == (
        True, None, "welcome")
    result = await mod.event("speaker-request-result")
    assert (result["participant"], result["outcome"], result["by"]) == (lee.id, "approved", None)
    status, body = await call(node, "POST", f"{BASE}/lia/deny", {"reason": "full"})
    assert (status, body["grants"]["can_publish"]) == (200, False)
    result = await lia.event("speaker-request-result")
    assert (result["outcome"], result["by"], result["reason"]) == ("denied", None, "full")
    assert grants_of(node, "lia")["can_publish"] is False
    for action in ("approve", "deny"):
        status, body = await call(node, "POST", f"{BASE}/lia/{action}")
        assert (status, body["code"]) == (409, "no_pending_request")


async def test_admin_invites_and_demotes(node: NodeHarness) -> None:
    lee = await join(node, "lee", role="listener")
    status, body = await call(node, "POST", f"{BASE}/lee/invite", {"message": "come up"})
    assert (status, body) == (200, {"invited": lee.id})
    invite = await lee.event("stage-invite")
    assert (invite["by"], invite["message"]) == (None, "come up")
    assert grants_of(node, "lee")["can_publish"] is False
    await lee.acked(type="respond-to-invite", accept=True)
    assert (await lee.event("permission-changed"))["grants"]["can_publish"] is True
    status, body = await call(node, "POST", f"{BASE}/lee/invite")
    assert (status, body["code"]) == (409, "already_speaker")
    status, body = await call(node, "POST", f"{BASE}/lee/demote", {"reason": "done"})
    assert (status, body["grants"]["can_publish"]) == (200, False)
    changed = await lee.event("permission-changed")
    assert (changed["grants"]["can_publish"], changed["by"], changed["reason"]) == (
        False, None, "done")
    status, body = await call(node, "POST", f"{BASE}/lee/demote")
    assert (status, body["code"]) == (409, "not_a_speaker")


async def test_admin_mutes_a_track_and_unmutes_only_when_the_room_allows(
        start_node: Any) -> None:
    node = await media_node(start_node)
    vic = await join(node, "vic", role="listener")
    spk = ParleyClient(node.url("/"), token("r1", "spk", role="speaker"))
    try:
        await spk.connect()
        [track] = await spk.publish(VideoStreamTrack())
        tid = track["id"]
        status, body = await call(node, "POST", f"{BASE}/spk/mute", {"track": tid, "muted": True})
        assert (status, body["id"], body["muted"]) == (200, tid, True)
        told = await spk.next_event("track-muted")
        assert (told["track"]["id"], told["track"]["muted"], told["by"]) == (tid, True, None)
        seen = await vic.event("track-updated")
        assert (seen["track"]["id"], seen["track"]["muted"]) == (tid, True)
        status, body = await call(node, "POST", f"{BASE}/spk/mute", {"track": tid, "muted": False})
        assert (status, body["code"]) == (403, "permission_denied")
        status, body = await call(node, "PATCH", "/api/rooms/r1", {"moderator_can_unmute": True})
        assert (status, body["options"]["moderator_can_unmute"]) == (200, True)
        status, body = await call(node, "POST", f"{BASE}/spk/mute", {"track": tid, "muted": False})
        assert (status, body["muted"]) == (200, False)
        assert (await spk.next_event("track-muted"))["track"]["muted"] is False
        status, body = await call(node, "POST", f"{BASE}/vic/mute", {"track": tid})
        assert (status, body["code"]) == (404, "unknown_track")  # not vic's track
    finally:
        await spk.close()


async def test_admin_patches_a_participant(node: NodeHarness) -> None:
    ann = await join(node, "ann", role="listener")
    bob = await join(node, "bob", role="listener")
    status, body = await call(node, "PATCH", f"{BASE}/ann", {"name": "Ann B", "metadata": "m"})
    assert (status, body["id"], body["name"], body["metadata"]) == (200, ann.id, "Ann B", "m")
    updated = (await bob.event("participant-updated"))["participant"]
    assert (updated["id"], updated["name"], updated["metadata"]) == (ann.id, "Ann B", "m")
    status, body = await call(node, "PATCH", f"{BASE}/ann", {"name": 7})
    assert (status, body["code"]) == (400, "invalid_message")


async def test_admin_delete_removes_and_bars_the_token(node: NodeHarness) -> None:
    ann = await join(node, "ann", role="listener")
    bob_token = token("r1", "bob", role="speaker")
    bob = Wire(await node.connect(), {})
    bob.joined = await bob.client.join(bob_token)
    status, body = await call(node, "DELETE", f"{BASE}/bob", {"reason": "off topic"})
    assert (status, body) == (200, {"removed": bob.id})
    removed = await bob.event("removed")
    assert (removed["by"], removed["reason"]) == (None, "off topic")
    assert (await bob.event("disconnect"))["reason"] == "removed"
    close = await bob.client.closed()
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 4006)
    left = await ann.event("participant-left")
    assert (left["participant"], left["reason"]) == (bob.id, "removed")
    await refused_join(node, bob_token, "removed_from_room")
    await join(node, "bob", role="speaker")  # a new token is welcome


async def test_admin_room_options_are_shown_and_take_effect(node: NodeHarness) -> None:
    lee = await join(node, "lee", role="listener")
    lia = await join(node, "lia", role="listener")
    status, body = await call(node, "PATCH", "/api/rooms/r1",
                              {"max_speakers": 1, "stage_policy": "auto"})
    assert status == 200
    status, body = await call(node, "GET", "/api/rooms/r1")
    assert status == 200
    assert body["options"] == {"max_speakers": 1, "stage_policy": "auto",
                               "speaker_request_timeout": 60.0,
                               "moderator_can_unmute": False}
    assert (await lee.call(type="request-to-speak"))["status"] == "approved"
    await lia.refused("stage_full", type="request-to-speak")
    await refused_join(node, token("r1", "sue", role="speaker"), "stage_full")
    late = await join(node, "late", role="listener")
    assert late.joined["room_options"] == {"max_speakers": 1, "stage_policy": "auto"}
    status, body = await call(node, "PATCH", "/api/rooms/r1", {"stage_policy": "anarchy"})
    assert (status, body["code"]) == (400, "invalid_message")
    status, body = await call(node, "GET", "/api/rooms/r1")
    assert body["options"]["stage_policy"] == "auto"


async def test_admin_delete_room_closes_it(node: NodeHarness) -> None:
    ann = await join(node, "ann", role="listener")
    status, body = await call(node, "DELETE", "/api/rooms/r1")
    assert (status, body) == (200, {"closed": "r1"})
    assert (await ann.event("disconnect"))["reason"] == "room_closed"
    close = await ann.client.closed()
    assert (close.type, close.data) == (aiohttp.WSMsgType.CLOSE, 4007)
    assert node.node.rooms.get(RoomName("r1")) is None
    status, body = await call(node, "GET", "/api/rooms/r1")
    assert (status, body["code"]) == (404, "unknown_room")


async def test_admin_errors_and_who_may_call(node: NodeHarness) -> None:
    lee = await join(node, "lee", role="listener")
    status, body = await call(node, "POST", f"{BASE}/nobody/approve")
    assert (status, body["code"]) == (404, "unknown_participant")
    status, body = await call(node, "POST", f"{BASE}/lee/approve")
    assert (status, body["code"]) == (409, "no_pending_request")
    await lee.call(type="request-to-speak")
    outsiders = (token("r1", "sam", role="speaker"), token("r1", "lia", role="listener"),
                 token("r2", "mod", role="moderator"))
    for tok in outsiders:
        for method, path, body in (("POST", f"{BASE}/lee/approve", None),
                                   ("PATCH", "/api/rooms/r1", {"max_speakers": 5}),
                                   ("DELETE", "/api/rooms/r1", None)):
            status, reply = await call(node, method, path, body, tok=tok)
            assert (status, reply["code"]) == (403, "permission_denied"), (method, path)
    assert grants_of(node, "lee")["can_publish"] is False
    assert node.node.rooms.get(RoomName("r1")).options.max_speakers == 0  # type: ignore
    status, body = await call(node, "POST", f"{BASE}/lee/approve", tok=EVERYWHERE)
    assert (status, body["grants"]["can_publish"]) == (200, True)
