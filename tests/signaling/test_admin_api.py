"""The admin HTTP API and health endpoints, with real bearer tokens."""

from __future__ import annotations

from typing import Any

import aiohttp

from signaling.auth import mint_token
from tests.conftest import KEY, Client, NodeHarness, token


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


MOD_R1 = {"room": "r1", "identity": "mod", "role": "moderator"}


async def call(node: NodeHarness, method: str, path: str,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with node.http.request(method, node.url(path), headers=headers or {}) as resp:
        return resp.status, await resp.json()


async def still_connected(client: Client) -> None:
    """The client is still in its room: a ping gets its pong, not a disconnect."""
    ping_id = await client.send(type="ping")
    while (reply := await client.recv())["type"] != "pong":
        assert reply["type"] not in ("disconnect", "left"), reply
    assert reply["id"] == ping_id


async def test_no_token_is_401_missing_token(node: NodeHarness) -> None:
    for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer "}):
        status, body = await call(node, "GET", "/api/rooms", headers)
        assert (status, body["code"]) == (401, "missing_token"), headers


async def test_bad_tokens_are_401(node: NodeHarness) -> None:
    forged = mint_token(key=KEY, secret="not-the-secret-000000000000000000", room="*",
                        identity="x", role="moderator")
    expired = token("*", "x", role="moderator", ttl=-120)
    cases = [("garbage", "invalid_token"), (forged, "bad_signature"),
             (expired, "token_expired")]
    for tok, code in cases:
        status, body = await call(node, "GET", "/api/rooms", bearer(tok))
        assert (status, body["code"]) == (401, code)


async def test_token_without_room_admin_is_403(node: NodeHarness) -> None:
    speaker = bearer(token("r1", "bob"))
    alice = await node.joined("r1", "alice")
    for method, path in (("GET", "/api/rooms"), ("GET", "/api/rooms/r1"),
                         ("DELETE", "/api/rooms/r1/participants/alice")):
        status, body = await call(node, method, path, speaker)
        assert (status, body["code"]) == (403, "permission_denied"), path
    await alice.send(type="ping", id="p")
    assert (await alice.expect("pong"))["id"] == "p"  # still in the room


async def test_moderator_sees_only_its_own_room(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    carol = await node.joined("r2", "carol")
    mod = bearer(token(**MOD_R1))
    status, body = await call(node, "GET", "/api/rooms", mod)
    assert status == 200
    assert body == {"rooms": [{"name": "r1", "num_participants": 1, "node": node.node.id}]}
    status, body = await call(node, "GET", "/api/rooms/r1", mod)
    assert status == 200 and body["name"] == "r1" and body["num_participants"] == 1
    assert [p["identity"] for p in body["participants"]] == ["alice"]
    for method, path in (("GET", "/api/rooms/r2"),
                         ("DELETE", "/api/rooms/r2/participants/carol")):
        status, body = await call(node, method, path, mod)
        assert (status, body["code"]) == (403, "permission_denied")
    await still_connected(carol)  # the refused DELETE removed no one
    await still_connected(alice)


async def test_wildcard_admin_token_sees_every_room(node: NodeHarness) -> None:
    for room, ident in (("r1", "alice"), ("r1", "bob"), ("r2", "carol")):
        await node.joined(room, ident)
    admin = bearer(token("*", "ops", grants={"room_admin": True}))
    status, body = await call(node, "GET", "/api/rooms", admin)
    assert status == 200
    assert body == {"rooms": [{"name": "r1", "num_participants": 2, "node": node.node.id},
                              {"name": "r2", "num_participants": 1, "node": node.node.id}]}
    status, body = await call(node, "GET", "/api/rooms/r2", admin)
    assert status == 200 and [p["identity"] for p in body["participants"]] == ["carol"]
    status, body = await call(node, "GET", "/api/rooms/r1", admin)
    assert status == 200
    assert sorted(p["identity"] for p in body["participants"]) == ["alice", "bob"]


async def test_unknown_room_and_participant_are_404(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    admin = bearer(token("*", "ops", role="moderator"))
    status, body = await call(node, "GET", "/api/rooms/nowhere", admin)
    assert (status, body["code"]) == (404, "unknown_room")
    status, body = await call(node, "DELETE", "/api/rooms/nowhere/participants/alice", admin)
    assert (status, body["code"]) == (404, "unknown_room")
    status, body = await call(node, "DELETE", "/api/rooms/r1/participants/nobody", admin)
    assert (status, body["code"]) == (404, "unknown_participant")
    await still_connected(alice)  # neither 404 removed her from r1


async def test_removed_participant_is_told_and_closed_4006(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    bob = await node.joined("r1", "bob")
    await alice.expect("participant-joined")
    bob_id = node.node.rooms.get("r1").by_identity("bob").id
    status, body = await call(node, "DELETE", "/api/rooms/r1/participants/bob",
                              bearer(token(**MOD_R1)))
    assert (status, body) == (200, {"removed": bob_id})
    msg = await bob.expect("disconnect")
    assert msg["reason"] == "removed"
    close = await bob.closed()
    assert close.type == aiohttp.WSMsgType.CLOSE and close.data == 4006
    left = await alice.expect("participant-left")
    assert (left["participant"], left["identity"], left["reason"]) == (bob_id, "bob", "removed")
    status, body = await call(node, "GET", "/api/rooms/r1", bearer(token(**MOD_R1)))
    assert [p["identity"] for p in body["participants"]] == ["alice"]


async def test_healthz_and_readyz(node: NodeHarness) -> None:
    assert await call(node, "GET", "/healthz") == (200, {"status": "ok"})
    status, body = await call(node, "GET", "/readyz")
    assert (status, body["ready"], body["node"]) == (200, True, node.node.id)
