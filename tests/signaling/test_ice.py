"""ICE servers in the join reply, with TURN REST API credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from signaling.config import IceConfig
from tests.conftest import StartNode, token

STUN = ("stun:stun.parley.test:3478",)
TURN = ("turn:turn.parley.test:3478?transport=udp", "turns:turn.parley.test:5349")


def expected_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


async def test_turn_credentials_are_minted_per_identity(start_node: StartNode) -> None:
    secret = "turn-shared-secret"
    h = await start_node(ice=IceConfig(stun_urls=STUN, turn_urls=TURN, turn_secret=secret,
                                       turn_ttl=600))
    client = await h.connect()
    before = time.time()
    reply = await client.join(token("r1", "alice"))
    after = time.time()
    stun, turn = reply["ice_servers"]
    assert stun == {"urls": list(STUN)}
    assert turn["urls"] == list(TURN)
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice"
    assert int(before + 600) - 1 <= int(expiry) <= int(after + 600) + 1
    assert turn["credential"] == expected_credential(secret, turn["username"])


async def test_each_participant_gets_its_own_turn_username(start_node: StartNode) -> None:
    h = await start_node(ice=IceConfig(turn_urls=TURN, turn_secret="s"))
    bob = await h.connect()
    reply = await bob.join(token("r1", "bob:with:colons"))
    (turn,) = reply["ice_servers"]
    expiry, _, user = turn["username"].partition(":")
    assert user == "bob:with:colons"
    assert abs(int(expiry) - (time.time() + 3600)) <= 2  # default turn_ttl
    assert turn["credential"] == expected_credential("s", turn["username"])


async def test_static_turn_credentials_without_a_secret(start_node: StartNode) -> None:
    h = await start_node(ice=IceConfig(stun_urls=STUN, turn_urls=TURN,
                                       turn_username="parley", turn_password="hunter2"))
    client = await h.connect()
    reply = await client.join(token("r1", "alice"))
    assert reply["ice_servers"] == [
        {"urls": list(STUN)},
        {"urls": list(TURN), "username": "parley", "credential": "hunter2"},
    ]


async def test_stun_only_has_no_credentials(start_node: StartNode) -> None:
    h = await start_node(ice=IceConfig(stun_urls=STUN))
    client = await h.connect()
    reply = await client.join(token("r1", "alice"))
    assert reply["ice_servers"] == [{"urls": list(STUN)}]
