"""The admin API's room options: strict JSON, finite values in range, and options that widen
moderators' powers only for backend tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import NodeHarness, token

BACKEND = token("r1", "ops", role="moderator", grants={"room_join": False})
MODERATOR = token("r1", "mod", role="moderator")


async def patch(node: NodeHarness, body: str | bytes, tok: str = BACKEND) -> tuple[int, Any]:
    async with node.http.patch(node.url("/api/rooms/r1"), data=body,
                               headers={"Authorization": f"Bearer {tok}",
                                        "Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


async def options(node: NodeHarness) -> dict[str, Any]:
    async with node.http.get(node.url("/api/rooms/r1"),
                             headers={"Authorization": f"Bearer {BACKEND}"}) as resp:
        body: dict[str, Any] = await resp.json()
        return dict(body["options"])


@pytest.fixture
async def room(node: NodeHarness) -> NodeHarness:
    await node.joined("r1", "alice")
    return node


@pytest.mark.parametrize("body", [
    '{"speaker_request_timeout": NaN}',
    '{"speaker_request_timeout": Infinity}',
    '{"speaker_request_timeout": -Infinity}',
    '{"max_speakers": 1e999}',
    '{"max_speakers": 2,}',
])
async def test_non_standard_json_is_malformed_json(room: NodeHarness, body: str) -> None:
    before = await options(room)
    status, reply = await patch(room, body)
    assert (status, reply["code"]) == (400, "malformed_json")
    assert await options(room) == before


@pytest.mark.parametrize("body", [
    '{"max_speakers": -1}',
    '{"max_speakers": 1001}',
    '{"max_speakers": 2.5}',
    '{"max_speakers": "3"}',
    '{"max_speakers": true}',
    '{"speaker_request_timeout": 0}',
    '{"speaker_request_timeout": 0.5}',
    '{"speaker_request_timeout": 3601}',
    '{"speaker_request_timeout": 1e300}',
    '{"speaker_request_timeout": "60"}',
    '{"stage_policy": "anarchy"}',
    '{"stage_policy": 1}',
    '{"moderator_can_unmute": "yes"}',
    '{"max_speakers": 3, "no_such_option": 1}',
    '[1, 2]',
])
async def test_out_of_range_or_mistyped_options_are_invalid_message(
        room: NodeHarness, body: str) -> None:
    before = await options(room)
    status, reply = await patch(room, body)
    assert (status, reply["code"]) == (400, "invalid_message")
    assert await options(room) == before  # nothing half-applied


async def test_options_at_the_ends_of_their_ranges_are_taken(room: NodeHarness) -> None:
    status, reply = await patch(room, '{"max_speakers": 1000, "speaker_request_timeout": 1}')
    assert status == 200
    assert (reply["options"]["max_speakers"], reply["options"]["speaker_request_timeout"]) \
        == (1000, 1.0)
    status, reply = await patch(room, '{"max_speakers": 0, "speaker_request_timeout": 3600}',
                                tok=MODERATOR)  # a participant's moderator may change these
    assert status == 200
    assert (reply["options"]["max_speakers"], reply["options"]["speaker_request_timeout"]) \
        == (0, 3600.0)


async def test_moderator_can_unmute_needs_a_token_that_cannot_join(room: NodeHarness) -> None:
    status, reply = await patch(room, '{"moderator_can_unmute": true}', tok=MODERATOR)
    assert (status, reply["code"]) == (403, "permission_denied")
    assert (await options(room))["moderator_can_unmute"] is False
    # unchanged is not a change: a moderator may send the options back as they are
    status, _ = await patch(room, '{"moderator_can_unmute": false, "max_speakers": 4}',
                            tok=MODERATOR)
    assert status == 200
    status, reply = await patch(room, '{"moderator_can_unmute": true}')
    assert (status, reply["options"]["moderator_can_unmute"]) == (200, True)
    status, reply = await patch(room, '{"moderator_can_unmute": false}', tok=MODERATOR)
    assert (status, reply["code"]) == (403, "permission_denied")
    assert (await options(room))["moderator_can_unmute"] is True
