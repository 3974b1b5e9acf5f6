"""The aiortc internals sfu/hooks_fastpath.py relies on are still where it expects them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import aiortc
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import State

from sfu.hooks import HookError
from sfu.hooks_fastpath import (
    ABS_SEND_TIME_URI,
    ASYNCIO_DATAGRAM,
    GSO_MAX_SEGMENTS,
    MID_URI,
    Gso,
    Protector,
    Wire,
    check_sender_hook_points,
    protector,
    send_buffer,
    send_packets,
    shared_socket,
    take_over_sender,
)
from sfu.udpmux import UdpMux

RTP_TASK = "_RTCRtpSender__rtp_task"
RTCP_TASK = "_RTCRtpSender__rtcp_task"


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == "1.16.0", (
        "aiortc changed: re-verify RTCRtpSender.send/stop/_handle_rtcp_packet, _ssrc, "
        "_rtx_ssrc, _enabled, RTCDtlsTransport._tx_srtp/_register_rtp_sender and aioice "
        "Connection._nominated, then update the pin and this test")


def test_the_header_extension_uris_are_the_ones_aiortc_offers() -> None:
    uris = {e.uri for e in aiortc.RTCRtpSender.getCapabilities("video").headerExtensions}
    assert {MID_URI, ABS_SEND_TIME_URI} <= uris


async def test_a_taken_over_sender_starts_no_aiortc_task_and_stops_once(
        loopback_ice: None) -> None:
    sfu, client = RTCPeerConnection(), RTCPeerConnection()
    started, stopped, rtcp = [], [], []
    try:
        sender = sfu.addTransceiver("video", direction="sendonly").sender
        take_over_sender(sender, on_start=started.append, on_rtcp=rtcp.append,
                         on_stop=lambda: stopped.append(1))
        await sfu.setLocalDescription(await sfu.createOffer())
        await client.setRemoteDescription(sfu.localDescription)
        await client.setLocalDescription(await client.createAnswer())
        await sfu.setRemoteDescription(client.localDescription)
        for _ in range(200):
            if started and Wire(sender).route() is not None:
                break
            await asyncio.sleep(0.02)
        assert len(started) == 1
        params = started[0]
        assert params.ssrc == sender._ssrc and params.rtx_ssrc == sender._rtx_ssrc
        assert params.rtx_payload_type is not None and params.mid_id is not None
        assert params.abs_send_time_id is not None and params.cname
        assert getattr(sender, RTP_TASK) is None and getattr(sender, RTCP_TASK) is None
        router = sender.transport._rtp_router
        assert router.senders.get(sender._ssrc) is sender  # RTCP still reaches it
        route = Wire(sender).route()
        assert route is not None
        _, transport, sock, _ = route
        assert type(transport) is ASYNCIO_DATAGRAM and isinstance(sock, socket.socket)
        assert sock is transport.get_extra_info("socket")._sock  # the transport's own
        await sender.stop()
        await sender.stop()
        assert stopped == [1]
        assert sender._ssrc not in router.senders
    finally:
        await client.close()
        await sfu.close()


async def test_take_over_fails_loudly_when_a_hook_point_is_gone() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("video").sender
        check_sender_hook_points(sender)
        del sender._rtx_ssrc
        with pytest.raises(HookError, match="_rtx_ssrc"):
            take_over_sender(sender, on_start=print, on_rtcp=print, on_stop=print)
    finally:
        await pc.close()


async def test_the_dtls_transport_state_is_the_enum_the_wire_reads() -> None:
    pc = RTCPeerConnection()
    try:
        dtls = pc.addTransceiver("video").sender.transport
        assert dtls._state is State.NEW and dtls.state == "new"
        assert State.CONNECTED.name == "CONNECTED"
    finally:
        await pc.close()


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)


@contextlib.contextmanager
def _udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): two UDP sockets on loopback, the receiver bound and waiting."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        yield sender, receiver
    finally:
        receiver.close()
        sender.close()


def test_one_packet_goes_straight_to_the_socket_and_a_full_socket_to_the_transport() -> None:
    with _udp_pair() as (sender, receiver):
        transport = _Transport()
        send_packets([b"\x80audio"], transport, sender, receiver.getsockname())
        assert receiver.recv(100) == b"\x80audio" and transport.sent == []
        sender.close()  # any error on the socket: the transport takes the packet
        send_packets([b"\x80late"], transport, sender, receiver.getsockname())
        assert transport.sent == [b"\x80late"]


def _session(key: bytes) -> pylibsrtp.Session:
    return pylibsrtp.Session(policy=pylibsrtp.Policy(
        key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM))


def _rtp(seq: int, size: int) -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(8) + bytes(range(256)) * (
        size // 256) + bytes(size % 256)


def test_the_protector_protects_as_pylibsrtp_and_its_receiver_can_read_it() -> None:
    key = bytes(range(28))
    fast, plain = _session(key), _session(key)
    protect = protector(fast)
    assert isinstance(protect, Protector)
    receiver = pylibsrtp.Session(policy=pylibsrtp.Policy(
        key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM))
    for seq, size in ((1, 1300), (2, 20), (3, 700)):
        packet = _rtp(seq, size)
        protected = protect(packet)
        assert protected == plain.protect(packet)
        assert receiver.unprotect(protected) == packet
    assert fast.protect(_rtp(4, 100)) == plain.protect(_rtp(4, 100))  # shares the buffer


def test_the_protector_refuses_what_pylibsrtp_refuses() -> None:
    protect = protector(_session(bytes(28)))
    with pytest.raises(ValueError, match="too long"):
        protect(_rtp(1, 1500))
    protect(_rtp(5, 100))
    with pytest.raises(pylibsrtp.Error):
        protect(_rtp(5, 100))  # the same index twice: libsrtp's replay check


def test_without_pylibsrtps_internals_the_sessions_own_protect_is_used() -> None:
    class Other:
        def protect(self, packet: bytes) -> bytes:
            return packet

    other = Other()
    assert protector(other) == other.protect  # type: ignore[arg-type]


async def test_the_wire_makes_a_new_protector_for_new_keys(loopback_ice: None) -> None:
    sfu, client = RTCPeerConnection(), RTCPeerConnection()
    try:
        sender = sfu.addTransceiver("video", direction="sendonly").sender
        take_over_sender(sender, on_start=print, on_rtcp=print, on_stop=print)
        await sfu.setLocalDescription(await sfu.createOffer())
        await client.setRemoteDescription(sfu.localDescription)
        await client.setLocalDescription(await client.createAnswer())
        await sfu.setRemoteDescription(client.localDescription)
        wire = Wire(sender)
        for _ in range(200):
            if wire.route() is not None:
                break
            await asyncio.sleep(0.02)
        first = wire.route()
        assert first is not None and wire.route()[0] is first[0]  # type: ignore[index]
        assert isinstance(first[0], Protector)
        assert first[0].session is sender.transport._tx_srtp
        sender.transport._tx_srtp = _session(bytes(28))  # as a DTLS restart would
        again = wire.route()
        assert again is not None and again[0] is not first[0]
        assert isinstance(again[0], Protector)
        assert again[0].session is sender.transport._tx_srtp
    finally:
        await client.close()
        await sfu.close()


def test_a_frames_packets_leave_in_order_in_one_segmented_send() -> None:
    if not Gso.enabled:
        pytest.skip("no UDP GSO on this kernel")
    with _udp_pair() as (sender, receiver):
        transport = _Transport()
        batches = Gso.batches
        packets = [bytes([n]) * 100 for n in range(3)] + [b"\x03" * 40]
        send_packets(packets, transport, sender, receiver.getsockname())
        send_packets(packets[:2], transport, sender, receiver.getsockname())
        got = [receiver.recv(200) for _ in range(6)]
        assert got == packets + packets[:2]
        assert transport.sent == [] and Gso.batches == batches + 2


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "sendto-per-packet"])
def test_a_buffer_of_packets_leaves_as_its_packets_in_order(
        gso: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if gso and not Gso.enabled:
        pytest.skip("no UDP GSO on this kernel")
    monkeypatch.setattr(Gso, "enabled", gso)
    with _udp_pair() as (sender, receiver):
        transport = _Transport()
        packets = [bytes([n]) * 100 for n in range(GSO_MAX_SEGMENTS + 2)] + [b"\xff" * 40]
        send_buffer(b"".join(packets), 100, transport, sender, receiver.getsockname())
        sent = [receiver.recv(200) for _ in range(len(packets) - len(transport.sent))]
        assert sent + transport.sent == packets
        if gso:  # 32 packets in one segmented send, the 3 after them in another
            assert transport.sent == []
        else:
            assert transport.sent == packets and sent == []


def test_a_buffer_goes_to_the_transport_when_no_socket_may_be_used() -> None:
    transport = _Transport()
    send_buffer(b"a" * 10 + b"b" * 10 + b"c" * 4, 10, transport, None, ("127.0.0.1", 9))
    assert transport.sent == [b"a" * 10, b"b" * 10, b"c" * 4]
    send_buffer(b"d" * 7, 7, transport, None, ("127.0.0.1", 9))
    assert transport.sent[-1] == b"d" * 7


async def test_the_shared_port_is_used_directly_only_for_an_address_its_endpoint_owns() -> None:
    mux = await UdpMux.open("127.0.0.1", 0)
    try:
        with _udp_pair() as (_, receiver):
            endpoint = mux.attach("abcd", asyncio.DatagramProtocol())
            there = receiver.getsockname()
            assert shared_socket(endpoint, there) is None  # not routed here yet
            endpoint.sendto(b"\x80first", there)  # as a connection's first packet does
            assert receiver.recvfrom(100) == (b"\x80first", mux.address)
            sock = shared_socket(endpoint, there)
            assert sock is not None and sock.getsockname() == mux.address
            packets = [bytes([n]) * 100 for n in range(3)] + [b"\xff" * 40]
            transport = _Transport()
            send_buffer(b"".join(packets), 100, transport, sock, there)
            got = [receiver.recvfrom(200) for _ in range(len(packets) - len(transport.sent))]
            assert [data for data, _ in got] + transport.sent == packets
            assert {source for _, source in got} <= {mux.address}
            other = mux.attach("efgh", asyncio.DatagramProtocol())
            assert shared_socket(other, there) is None  # another connection's address
            endpoint.close()
            assert shared_socket(endpoint, there) is None
    finally:
        await mux.close()
    assert shared_socket(other, there) is None
