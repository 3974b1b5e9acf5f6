"""Remote ICE candidates the node's filter denies never get a STUN packet.

The node's ICE checks go from 127.0.0.1; two UDP sockets stand for remote
candidates, one on an allowed and one on a denied loopback address. The
denied one must hear nothing, whether named in the offer's ``a=candidate``
lines or trickled; the allowed one proves checks were being sent at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from conference.ids import RoomName
from sfu.candidates import DEFAULT_DENY, CandidateFilter
from sfu.config import SfuConfig
from signaling.config import ConfigError, load_config
from tests.conftest import StartNode
from tests.media_helpers import LOOPBACK_SFU, media_node, peers

ALLOWED, DENIED, DENIED_IN_OFFER = "127.0.0.3", "127.0.0.2", "127.0.0.4"


class Listener(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


async def listen(host: str) -> tuple[asyncio.DatagramTransport, Listener, int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Listener, local_addr=(host, 0))
    return transport, protocol, transport.get_extra_info("sockname")[1]


def is_stun(packet: bytes) -> bool:
    return len(packet) >= 20 and packet[4:8] == b"\x21\x12\xa4\x42"


async def test_a_denied_candidate_never_gets_a_stun_packet(start_node: StartNode) -> None:
    sfu = SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses,
                    candidate_deny=(*DEFAULT_DENY, "127.0.0.2/32", "127.0.0.4/32"))
    node = await media_node(start_node, sfu=sfu)
    sockets = [await listen(host) for host in (ALLOWED, DENIED, DENIED_IN_OFFER)]
    try:
        (_, allowed, allowed_port), (_, denied, denied_port), (_, in_offer, offer_port) = sockets
        async with peers(node, "room", "speaker") as (speaker,):
            pc = RTCPeerConnection()
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = str(pc.localDescription.sdp)
            await pc.close()
            sdp = sdp.replace("a=end-of-candidates\r\n", "")  # more are trickled below
            sdp = sdp.replace("a=mid:0\r\n", "a=mid:0\r\na=candidate:9 1 udp 2130706431 "
                              f"{DENIED_IN_OFFER} {offer_port} typ host\r\n", 1)
            await speaker.client.request({"type": "offer", "sdp": sdp})
            room = node.node.rooms.get(RoomName("room"))
            assert room is not None and room.media is not None
            member = room.media.members[speaker.client.participant_id]  # type: ignore[attr-defined]
            applied = member.publisher.pc.remoteDescription.sdp
            assert DENIED_IN_OFFER not in applied  # removed before aiortc saw it
            for host, port in ((DENIED, denied_port), (ALLOWED, allowed_port)):
                await speaker.client.send({"type": "candidate", "target": "publisher",
                                           "candidate": {"candidate": f"candidate:7 1 udp "
                                                         f"2130706431 {host} {port} typ host",
                                                         "sdpMid": "0", "sdpMLineIndex": 0}})
            async with asyncio.timeout(10):
                while not any(is_stun(p) for p in allowed.packets):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # checks go out every 20-50 ms: plenty of chances
            assert denied.packets == [] and in_offer.packets == []
    finally:
        for transport, _, _ in sockets:
            transport.close()


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.1.1", "fe80::1",
                                  "fe80::1%eth0", "::ffff:169.254.169.254", "224.0.0.251",
                                  "ff02::1", "0.0.0.0", "::", "255.255.255.255",
                                  "metadata.google.internal"])
def test_default_filter_denies_link_local_unspecified_multicast_and_names(host: str) -> None:
    assert not SfuConfig().candidate_filter.allows(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "192.0.2.10", "10.1.2.3", "2001:db8::1",
                                  "1f3e2c9a-5b7d-4e61-8a2f-0c9d8e7f6a5b.local"])
def test_default_filter_allows_ordinary_addresses_and_mdns_names(host: str) -> None:
    assert SfuConfig().candidate_filter.allows(host)


def test_allow_list_restricts_and_deny_still_wins() -> None:
    rules = CandidateFilter.of(("10.0.0.0/8",), ("10.9.0.0/16",))
    assert rules.allows("10.1.2.3")
    assert not rules.allows("10.9.1.1") and not rules.allows("192.0.2.1")
    assert not rules.allows("abc.local")  # cannot be checked against the allow list


def test_candidate_networks_come_from_yaml_or_the_environment(tmp_path: Any) -> None:
    config = load_config(env={"PARLEY_SFU_CANDIDATE_DENY": "169.254.0.0/16, 10.0.0.0/8",
                              "PARLEY_SFU_CANDIDATE_ALLOW": "10.0.0.0/8,192.0.2.0/24"})
    assert config.sfu.candidate_deny == ("169.254.0.0/16", "10.0.0.0/8")
    assert not config.sfu.candidate_filter.allows("10.0.0.1")
    assert config.sfu.candidate_filter.allows("192.0.2.7")
    path = tmp_path / "parley.yaml"
    path.write_text("sfu:\n  candidate_deny: [169.254.169.254/32]\n")
    assert load_config(path=path, env={}).sfu.candidate_filter.allows("169.254.1.1")
    with pytest.raises(ConfigError, match="candidate_deny"):
        load_config(env={"PARLEY_SFU_CANDIDATE_DENY": "not-a-network"})
