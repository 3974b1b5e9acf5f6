"""Resuming a session after a dropped socket: same participant, no leave and join."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from conference.ids import Identity, ParticipantId, RoomName
from signaling.config import SignalingConfig
from signaling.resume import ResumeTokens
from tests.conftest import KEY, SECRET, Client, NodeHarness, StartNode, token

WINDOW = 1.0


async def resumable_node(start_node: StartNode, window: float = WINDOW) -> NodeHarness:
    return await start_node(signaling=SignalingConfig(resume_window=window))


async def drop(client: Client) -> None:
    """The socket goes away without ``leave``."""
    await client.ws.close()


async def rejoin(h: NodeHarness, tok: str, resume: str | None) -> tuple[Client, dict]:
    client = await h.connect()
    return client, await client.join(tok, resume=resume)


async def no_message(client: Client, types: set[str], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            msg = await client.recv(max(0.01, end - loop.time()))
        except TimeoutError:
            return
        assert msg["type"] not in types, msg


def test_a_resume_token_verifies_on_any_node_with_the_same_keys() -> None:
    minted = ResumeTokens({KEY: SECRET}).mint(
        key=KEY, room=RoomName("r1"), participant=ParticipantId("PA_x"),
        identity=Identity("alice"), expires_at=time.time() + 5)
    claim = ResumeTokens({"other": "x", KEY: SECRET}).verify(minted)
    assert claim is not None and (claim.room, claim.participant, claim.identity) == \
        ("r1", "PA_x", "alice")
    assert ResumeTokens({KEY: "another secret"}).verify(minted) is None
    body, _, sig = minted.partition(".")
    assert ResumeTokens({KEY: SECRET}).verify(f"{body}x.{sig}") is None
    assert ResumeTokens({KEY: SECRET}).verify(minted, now=time.time() + 6) is None
    assert ResumeTokens({KEY: SECRET}).verify("not a token") is None


async def test_a_dropped_socket_resumes_its_participant_and_the_room_sees_no_leave(
        start_node: StartNode) -> None:
    h = await resumable_node(start_node)
    alice_tok = token("r1", "alice")
    alice = await h.connect()
    joined = await alice.join(alice_tok)
    assert joined["resumed"] is False and joined["resume_token"]
    assert joined["resume_expires_at"] > time.time()
    bob = await h.joined("r1", "bob")
    await alice.expect("participant-joined")

    await drop(alice)
    held = await bob.expect("participant-updated")
    assert (held["participant"]["id"], held["participant"]["reconnecting"]) == \
        (joined["participant"]["id"], True)
    assert len(h.node.rooms.get("r1")) == 2

    _, again = await rejoin(h, alice_tok, joined["resume_token"])
    assert again["resumed"] is True
    assert again["participant"]["id"] == joined["participant"]["id"]
    assert [p["identity"] for p in again["participants"]] == ["bob"]
    back = await bob.expect("participant-updated")
    assert back["participant"]["reconnecting"] is False
    # past the window: nobody left, nobody joined
    await no_message(bob, {"participant-left", "participant-joined"}, WINDOW + 0.3)
    assert len(h.node.rooms.get("r1")) == 2


async def test_the_resume_token_is_refreshed_while_connected(start_node: StartNode) -> None:
    h = await resumable_node(start_node, window=0.6)
    alice = await h.connect()
    joined = await alice.join(token("r1", "alice"))
    fresh = await alice.expect("resume-token", timeout=2.0)
    assert fresh["resume_expires_at"] > joined["resume_expires_at"]
    claim = h.node.resume_tokens.verify(fresh["resume_token"])
    assert claim is not None and claim.participant == joined["participant"]["id"]


async def test_an_expired_or_foreign_resume_token_joins_as_new(start_node: StartNode) -> None:
    h = await resumable_node(start_node, window=0.3)
    alice_tok = token("r1", "alice")
    alice = await h.connect()
    joined = await alice.join(alice_tok)
    bob = await h.joined("r1", "bob")
    await drop(alice)
    left = await bob.expect("participant-left", timeout=3.0)
    assert (left["identity"], left["reason"]) == ("alice", "disconnected")
    _, again = await rejoin(h, alice_tok, joined["resume_token"])  # expired by now
    assert again["resumed"] is False
    assert again["participant"]["id"] != joined["participant"]["id"]
    assert (await bob.expect("participant-joined"))["participant"]["identity"] == "alice"
    # bob's token cannot take alice's participant
    _, carol = await rejoin(h, token("r1", "carol"), again["resume_token"])
    assert carol["resumed"] is False and carol["participant"]["id"] != again["participant"]["id"]
    _, forged = await rejoin(h, token("r1", "dave"), "e30.AAAA")
    assert forged["resumed"] is False


async def test_resuming_while_the_old_socket_is_open_takes_it_over(
        start_node: StartNode) -> None:
    h = await resumable_node(start_node)
    alice_tok = token("r1", "alice")
    old = await h.connect()
    joined = await old.join(alice_tok)
    bob = await h.joined("r1", "bob")
    _, again = await rejoin(h, alice_tok, joined["resume_token"])
    assert again["resumed"] is True
    assert again["participant"]["id"] == joined["participant"]["id"]
    bye = await old.expect("disconnect")
    assert bye["reason"] == "duplicate_identity"
    assert (await old.closed()).data == 4005
    await no_message(bob, {"participant-left", "participant-joined"}, 0.5)
    assert len(h.node.rooms.get("r1")) == 2


async def test_an_approved_listener_comes_back_on_stage_resumed_or_not(
        start_node: StartNode) -> None:
    h = await resumable_node(start_node)
    mod = await h.joined("r1", "mod", role="moderator")
    lee_tok = token("r1", "lee", role="listener")
    lee = await h.connect()
    joined = await lee.join(lee_tok)
    assert joined["grants"]["can_publish"] is False
    await lee.send(type="request-to-speak")
    request = await mod.expect("speaker-request")
    await mod.send(type="approve-speaker", participant=request["participant"]["id"])
    await lee.expect("permission-changed")

    await drop(lee)
    _, resumed = await rejoin(h, lee_tok, joined["resume_token"])
    assert resumed["resumed"] is True and resumed["grants"]["can_publish"] is True

    # the other path, a join as new (the room state), agrees
    lee2 = h.clients[-1]
    await drop(lee2)
    _, fresh = await rejoin(h, lee_tok, None)
    assert fresh["resumed"] is False and fresh["grants"]["can_publish"] is True


async def test_a_resumed_participant_keeps_its_subscriptions(start_node: StartNode) -> None:
    # Signalling only: the preference is kept on the participant and sent back in joined.
    h = await resumable_node(start_node)
    alice_tok = token("r1", "alice")
    alice = await h.connect()
    joined = await alice.join(alice_tok)
    participant = h.node.rooms.get("r1").get(joined["participant"]["id"])
    participant.subscriptions["TR_kept"] = "paused"
    await drop(alice)
    await asyncio.sleep(0.1)
    _, again = await rejoin(h, alice_tok, joined["resume_token"])
    assert again["subscriptions"] == {"TR_kept": "paused"}


async def test_without_a_resume_window_a_dropped_socket_leaves_at_once(
        start_node: StartNode) -> None:
    h = await start_node(signaling=replace(SignalingConfig(), resume_window=0.0))
    alice = await h.connect()
    joined = await alice.join(token("r1", "alice"))
    assert joined["resume_token"] is None
    bob = await h.joined("r1", "bob")
    await drop(alice)
    left = await bob.expect("participant-left")
    assert left["reason"] == "disconnected"
