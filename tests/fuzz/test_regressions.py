"""Inputs the fuzzers found, replayed. A test marked ``xfail(strict=True)`` is a bug still
open (fuzz/known.py names where it belongs): it fails today, and its XPASS after the fix
says to drop the marker and the fuzz/known.py entry."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket
from aiortc.sdp import SessionDescription

from client.media import EncodedTrack, encode_video
from conference.ids import RoomName
from fuzz import media_targets, targets
from fuzz.known import KNOWN
from fuzz.seeds import JWT_HEADER, OFFER_LINES, sign_jwt
from sfu.errors import SfuCode, SfuError
from sfu.sdp import filter_codecs, read_description
from signaling.errors import ErrorCode, SignalError
from tests.conftest import Client, NodeHarness, StartNode, token
from tests.fuzz.test_protocol_fuzz import OPEN
from tests.media_helpers import media_node, peers


def offer(*, without: str = "", extra: dict[str, str] | None = None) -> str:
    """The seed offer, less the lines that start with ``without``, and with ``extra``
    lines replaced."""
    lines = [(extra or {}).get(line, line) for line in OFFER_LINES
             if not (without and line.startswith(without))]
    return "\r\n".join(lines) + "\r\n"


async def refused_with_a_code(client: Client, raw: str) -> dict[str, object]:
    """Send ``raw`` (whose id is "1"): its reply must be an error, and not internal_error
    (an error for text that is not JSON cannot carry the id)."""
    await client.ws.send_str(raw)
    reply = await client.recv()
    while reply.get("id") != "1" and reply["type"] != "error":
        reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] != ErrorCode.INTERNAL_ERROR, reply
    return reply


def test_every_known_bug_has_its_regression_test() -> None:
    tests = set(globals())
    assert {bug.test for bug in KNOWN} <= tests


# -- signalling (signaling/protocol.py, signaling/auth.py) ---------------------------
async def test_nan_in_a_data_payload_is_refused_not_relayed(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    await node.joined("r1", "bob")
    reply = await refused_with_a_code(alice, '{"type":"data","id":"1","payload":NaN}')
    assert reply["code"] in (ErrorCode.MALFORMED_JSON, ErrorCode.INVALID_MESSAGE)


def test_message_target_nan_in_an_unknown_field() -> None:
    targets.message(b'{"type":"ping","x":-Infinity}')


async def test_deeply_nested_payload_is_refused_not_an_internal_error(
        start_node: StartNode) -> None:
    """Near the recursion limit a payload parses, then cannot be written for the others."""
    node = await start_node(signaling=OPEN)
    alice = await node.joined("r1", "alice")
    await node.joined("r1", "bob")
    for depth in range(850, 1000):
        payload = "[" * depth + "]" * depth
        await alice.ws.send_str(f'{{"type":"data","id":"{depth}","payload":{payload}}}')
        reply = await alice.recv()
        assert reply.get("code") != ErrorCode.INTERNAL_ERROR, (depth, reply)


async def test_token_with_a_lone_surrogate_is_an_invalid_token(node: NodeHarness) -> None:
    client = await node.connect()
    reply = await refused_with_a_code(client, '{"type":"join","id":"1","token":"eyJ\\ud800"}')
    assert reply["code"] in (ErrorCode.INVALID_TOKEN, ErrorCode.MALFORMED_JSON)


def test_token_with_a_huge_exp_is_refused_with_a_code() -> None:
    claims = '{"iss":"k1","sub":"a","exp":1' + "0" * 400 + ',"grants":{"room":"r1"}}'
    with pytest.raises(SignalError):
        targets._VERIFIER.verify(sign_jwt(JWT_HEADER.encode(), claims.encode()))


# -- conference (conference/room.py) ---------------------------------------------------
async def test_metadata_with_a_lone_surrogate_is_refused_with_a_code(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    await refused_with_a_code(alice, '{"type":"update","id":"1","metadata":"\\udfff"}')


# -- SDP (sfu/sdp.py) ----------------------------------------------------------------
def test_sdp_line_separators_cannot_hide_an_m_line_from_the_filter() -> None:
    """aiortc splits lines at a lone CR (and at \\x0b, \\x0c, \\x85, U+2028, ...); the
    SFU's reader does not, so an H.264 m-line hidden there is neither counted nor
    filtered, and aiortc negotiates it."""
    hidden = "a=mid:0\rm=video 9 UDP/TLS/RTP/SAVPF 102\ra=mid:9\ra=sendonly\r" \
             "a=rtpmap:102 H264/90000"
    sdp = offer(extra={"a=mid:0": hidden})
    try:
        counted = read_description(sdp, max_sections=12).sections
        applied = SessionDescription.parse(filter_codecs(sdp)).media
    except SfuError as err:
        assert err.code is SfuCode.INVALID_SDP
        return
    assert [m.kind for m in applied] == [s.kind for s in counted]
    assert not any(c.mimeType == "video/H264" for m in applied for c in m.rtp.codecs)


def test_unicode_digit_payload_type_is_invalid_sdp() -> None:
    """``"²".isdigit()`` is true but ``int("²")`` raises: internal_error on the wire."""
    with pytest.raises(SfuError):
        filter_codecs(offer(extra={"a=rtpmap:0 PCMU/8000": "a=rtpmap:\u00b2 opus/48000"}))


# -- the SFU's publish connection (sfu/transport.py) -----------------------------------
async def media_member(h: NodeHarness, identity: str) -> Client:
    client = await h.connect()
    await client.join(token("r1", identity), media=True)
    return client


async def test_refused_offer_leaves_a_usable_closable_publisher(
        start_node: StartNode, caplog: pytest.LogCaptureFixture) -> None:
    """Without its m=video line the video attributes fall into the audio section (two
    mids): aiortc refuses the offer after creating a transceiver without a transport,
    and the publish connection can then neither take a candidate nor close."""
    caplog.set_level(logging.ERROR)
    node = await media_node(start_node)
    alice = await media_member(node, "alice")
    await alice.send(type="offer", sdp=offer(without="m=video"))
    assert (await alice.expect("error"))["code"] == SfuCode.INVALID_SDP
    await alice.send(type="candidate", target="publisher", candidate={
        "candidate": "candidate:1 1 udp 2122063615 127.0.0.1 9 typ host", "sdpMid": "0"})
    await alice.send(type="ping", id="after")
    reply = await alice.recv()
    while reply["type"] not in ("error", "pong"):
        reply = await alice.recv()
    assert reply.get("code") != ErrorCode.INTERNAL_ERROR, reply
    await alice.send(type="leave")
    await alice.closed()
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_offer_without_fingerprint_is_invalid_sdp(
        start_node: StartNode, caplog: pytest.LogCaptureFixture) -> None:
    """aiortc accepts it, then its connect task dies (``Task exception was never
    retrieved``) and the connection never comes up or fails."""
    caplog.set_level(logging.ERROR)
    node = await media_node(start_node)
    alice = await media_member(node, "alice")
    await alice.send(type="offer", sdp=offer(without="a=fingerprint"))
    reply = await alice.recv()
    while reply["type"] not in ("error", "answer"):
        reply = await alice.recv()
    await asyncio.sleep(1.0)
    assert reply.get("code") == SfuCode.INVALID_SDP, reply
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- RTCP (sfu/hooks.py: fixed) ----------------------------------------------------------
MALFORMED_REMB = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                fci=b"REMB\x05\x00\x10\x00")
"""A REMB that announces five SSRCs and carries none."""


def test_rtcp_target_survives_a_remb_shorter_than_its_ssrc_list() -> None:
    media_targets.rtcp(b"\x01" + bytes(MALFORMED_REMB))


async def test_malformed_remb_from_a_subscriber_does_not_end_its_connection(
        start_node: StartNode) -> None:
    """aiortc's RTCP router read past the packet (struct.error, uncaught), which ended
    the subscriber's DTLS transport: media to it stopped for good."""
    node = await media_node(start_node)
    async with peers(node, "room", "pub", "sub") as (pub, sub):
        await pub.client.publish(EncodedTrack(encode_video(seconds=1.0, width=160,
                                                           height=120)))
        pid = pub.client.participant_id
        await sub.wait_frames(pid, 5, timeout=15)
        assert sub.client.subscriber is not None
        receiver = next(t.receiver for t in sub.client.subscriber.getTransceivers()
                        if t.kind == "video")
        await receiver._send_rtcp(MALFORMED_REMB)
        await asyncio.sleep(0.3)
        before = sub.received.count(pid)
        await sub.wait_frames(pid, before + 10, timeout=10)


async def test_subscriber_connection_that_ended_closes_without_an_error(
        start_node: StartNode, caplog: pytest.LogCaptureFixture) -> None:
    """When the DTLS transport of a subscribe connection ends (as a malformed REMB made
    it), the negotiation task fails on the closed connection and closing the transport
    re-raises it (``Task exception was never retrieved``)."""
    caplog.set_level(logging.ERROR)
    node = await media_node(start_node)
    async with peers(node, "room", "pub", "sub") as (pub, sub):
        await pub.client.publish(EncodedTrack(encode_video(seconds=1.0, width=160,
                                                           height=120)))
        await sub.wait_frames(pub.client.participant_id, 5, timeout=15)
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and room.media is not None
        member = room.media.members[sub.client.participant_id]  # type: ignore[index]
        assert member.subscriber is not None
        dtls = member.subscriber.pc.getTransceivers()[0].receiver.transport
        await dtls.stop()
        await asyncio.sleep(1.0)
    deadline = time.monotonic() + 3  # the participants left: their connections close
    while time.monotonic() < deadline and not caplog.records:
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
