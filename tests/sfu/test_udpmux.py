"""One UDP socket for the node: demultiplexing, closing, the aioice hook, config."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioice
import aioice.ice
import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack

from sfu import hooks, udpmux
from sfu.config import SfuConfig
from sfu.udpmux import NodeMedia, UdpMux, UfragInUse, node_media_socket, stun_local_ufrag
from signaling.config import ConfigError, load_config

STEP = 10.0


class Recorder(asyncio.DatagramProtocol):
    """Stands where an ICE connection would: keeps what the mux hands it."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.arrived = asyncio.Event()
        self.lost = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    async def next(self) -> bytes:
        await asyncio.wait_for(self.arrived.wait(), STEP)
        self.arrived.clear()
        return self.datagrams[-1][0]


class Peer:
    """A remote ICE agent's socket on loopback."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()

    def send(self, data: bytes, mux: UdpMux) -> None:
        self.sock.sendto(data, mux.address)

    async def recv(self) -> tuple[bytes, Any]:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recvfrom(self.sock, 2048), STEP)

    def close(self) -> None:
        self.sock.close()


def request(ufrag: str, sender: str = "them") -> stun.Message:
    message = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    message.attributes["PRIORITY"] = 1
    message.attributes["USERNAME"] = f"{ufrag}:{sender}"
    return message


def response_to(message: stun.Message) -> bytes:
    return bytes(stun.Message(message_method=stun.Method.BINDING,
                              message_class=stun.Class.RESPONSE,
                              transaction_id=message.transaction_id))


async def settle(mux: UdpMux, received: int) -> None:
    """Wait until the mux has read ``received`` datagrams in all."""
    async with asyncio.timeout(STEP):
        while mux.received < received:
            await asyncio.sleep(0.01)


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    shared = await UdpMux.open("127.0.0.1", 0)
    try:
        yield shared
    finally:
        await shared.close()


@pytest.fixture
def remote() -> Iterator[list[Peer]]:
    peers = [Peer() for _ in range(3)]
    yield peers
    for peer in peers:
        peer.close()


# -- demultiplexing ---------------------------------------------------------------------
async def test_a_check_reaches_the_connection_its_username_names_and_claims_the_address(
        mux: UdpMux, remote: list[Peer]) -> None:
    a, b = Recorder(), Recorder()
    ea, eb = mux.attach("ufA", a), mux.attach("ufB", b)
    remote[0].send(bytes(request("ufB")), mux)
    assert stun_local_ufrag(await b.next()) == "ufB"
    assert mux.owner(remote[0].address) is eb and eb.addresses == {remote[0].address: True}
    remote[0].send(b"\x80media", mux)  # RTP from the same address: by address now
    assert await b.next() == b"\x80media"
    remote[1].send(bytes(request("ufA")), mux)
    remote[1].send(b"\x17dtls", mux)
    await settle(mux, 4)
    assert [d for d, _ in a.datagrams][1:] == [b"\x17dtls"]
    assert len(b.datagrams) == 2 and ea.addresses == {remote[1].address: True}


async def test_data_from_an_address_no_connection_owns_is_dropped(
        mux: UdpMux, remote: list[Peer]) -> None:
    recorder = Recorder()
    mux.attach("ufA", recorder)
    remote[0].send(b"\x80media", mux)
    remote[0].send(b"", mux)
    await settle(mux, 2)
    assert recorder.datagrams == [] and mux.dropped == 2


async def test_a_check_naming_no_attached_ufrag_is_dropped_even_from_a_known_address(
        mux: UdpMux, remote: list[Peer]) -> None:
    recorder = Recorder()
    mux.attach("ufA", recorder)
    remote[0].send(bytes(request("ufA")), mux)
    await recorder.next()
    remote[0].send(bytes(request("nope")), mux)
    without_username = request("ufA")
    del without_username.attributes["USERNAME"]
    remote[0].send(bytes(without_username), mux)
    await settle(mux, 3)
    assert len(recorder.datagrams) == 1 and mux.dropped == 2


async def test_a_response_reaches_the_connection_that_sent_the_request(
        mux: UdpMux, remote: list[Peer]) -> None:
    """Both connections check the same remote address; the first owns it, yet each
    response goes to the connection whose transaction it answers."""
    a, b = Recorder(), Recorder()
    ea, eb = mux.attach("ufA", a), mux.attach("ufB", b)
    check_a, check_b = request("them", "ufA"), request("them", "ufB")
    ea.sendto(bytes(check_a), remote[0].address)
    eb.sendto(bytes(check_b), remote[0].address)
    for _ in range(2):
        _, source = await remote[0].recv()
        assert source == mux.address
    assert mux.owner(remote[0].address) is ea and ea.addresses == {remote[0].address: False}
    assert mux.route_counts["transactions"] == 2
    remote[0].send(response_to(check_b), mux)
    assert stun.parse_message(await b.next()).transaction_id == check_b.transaction_id
    remote[0].send(response_to(check_a), mux)
    assert stun.parse_message(await a.next()).transaction_id == check_a.transaction_id
    assert mux.route_counts["transactions"] == 0


async def test_an_address_moves_to_the_connection_whose_ufrag_its_checks_name(
        mux: UdpMux, remote: list[Peer]) -> None:
    """A remote address one connection only sent to, or a stale one, follows the checks."""
    a, b = Recorder(), Recorder()
    ea, eb = mux.attach("ufA", a), mux.attach("ufB", b)
    ea.sendto(b"\x80probe", remote[0].address)
    await remote[0].recv()
    remote[0].send(bytes(request("ufB")), mux)
    await b.next()
    remote[0].send(b"\x80media", mux)
    assert await b.next() == b"\x80media"
    assert mux.owner(remote[0].address) is eb and ea.addresses == {}
    assert a.datagrams == []


async def test_only_a_check_signed_with_the_password_moves_an_address(
        mux: UdpMux, remote: list[Peer]) -> None:
    a, b = Recorder(), Recorder()
    ea = mux.attach("ufA", a, key=b"password-of-a")
    mux.attach("ufB", b, key=b"password-of-b")
    signed = request("ufA")
    signed.add_message_integrity(b"password-of-a")
    remote[0].send(bytes(signed), mux)
    await a.next()
    assert mux.owner(remote[0].address) is ea
    forged = request("ufB")
    forged.add_message_integrity(b"a guess")
    remote[0].send(bytes(forged), mux)
    remote[0].send(bytes(request("ufB")), mux)  # unsigned
    await settle(mux, 3)
    assert len(b.datagrams) == 2  # delivered, for the connection to refuse (401) ...
    assert mux.owner(remote[0].address) is ea  # ... but the address stays a's
    remote[0].send(b"\x80media", mux)
    assert await a.next() == b"\x80media"


async def test_one_connection_routes_at_most_32_addresses(mux: UdpMux) -> None:
    recorder = Recorder()
    endpoint = mux.attach("ufA", recorder)
    peers = [Peer() for _ in range(40)]
    try:
        for i, peer in enumerate(peers):
            peer.send(bytes(request("ufA")), mux)
            await settle(mux, i + 1)
        assert list(endpoint.addresses) == [p.address for p in peers[8:]]
        assert mux.route_counts["addresses"] == 32 and mux.owner(peers[0].address) is None
    finally:
        for peer in peers:
            peer.close()


async def test_a_taken_ufrag_is_refused_or_replaced(mux: UdpMux) -> None:
    first = mux.attach("same", Recorder())
    with pytest.raises(UfragInUse):
        mux.attach("same", Recorder())
    fresh = iter(["same", "same", "other"])
    second = mux.attach("same", Recorder(), new_ufrag=lambda: next(fresh))
    assert second.ufrag == "other" and mux.endpoint("same") is first
    with pytest.raises(UfragInUse):
        mux.attach("same", Recorder(), new_ufrag=lambda: "other")
    with pytest.raises(ValueError):
        mux.attach("a:b", Recorder())


async def test_a_closed_connection_leaves_no_route(mux: UdpMux, remote: list[Peer]) -> None:
    a = Recorder()
    ea = mux.attach("ufA", a)
    remote[0].send(bytes(request("ufA")), mux)
    await a.next()
    ea.sendto(b"\x80out", remote[1].address)  # learnt by sending
    ea.sendto(bytes(request("them", "ufA")), remote[2].address)  # a pending transaction
    await remote[1].recv()
    assert mux.route_counts == {"ufrags": 1, "addresses": 3, "transactions": 1}
    ea.close()
    ea.close()
    await asyncio.wait_for(a.lost.wait(), STEP)
    assert mux.route_counts == {"ufrags": 0, "addresses": 0, "transactions": 0}
    assert mux.owner(remote[0].address) is None and mux.endpoint("ufA") is None
    ea.sendto(b"\x80late", remote[1].address)  # a closed endpoint sends nothing
    b = Recorder()
    mux.attach("ufA", b)  # the ufrag is free again; the old addresses are not its
    remote[0].send(b"\x80stale", mux)
    remote[1].send(b"\x80stale", mux)
    await settle(mux, 3)
    assert a.datagrams[1:] == [] and b.datagrams == [] and mux.dropped == 2
    with pytest.raises(BlockingIOError):
        remote[1].sock.recv(2048)


async def test_closing_the_mux_closes_every_connection_and_frees_the_port() -> None:
    shared = await UdpMux.open("127.0.0.1", 0)
    recorders = [Recorder() for _ in range(3)]
    for i, recorder in enumerate(recorders):
        shared.attach(f"u{i}", recorder)
    await shared.close()
    await shared.close()
    for recorder in recorders:
        await asyncio.wait_for(recorder.lost.wait(), STEP)
    assert shared.route_counts == {"ufrags": 0, "addresses": 0, "transactions": 0}
    with pytest.raises(ConnectionError):
        shared.attach("late", Recorder())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(shared.address)  # free again


async def test_a_port_in_use_is_a_clear_error(mux: UdpMux) -> None:
    with pytest.raises(OSError, match=f"cannot bind UDP 127.0.0.1:{mux.address[1]}"):
        await UdpMux.open("127.0.0.1", mux.address[1])


def test_the_username_is_found_after_other_attributes_and_padding() -> None:
    message = request("abc", "defgh")
    message.attributes["ICE-CONTROLLING"] = 7
    message.add_message_integrity(b"password")
    data = bytes(message)
    assert stun_local_ufrag(data) == "abc"
    assert udpmux.stun_class(data) == 0
    assert udpmux.stun_class(response_to(message)) == 2
    assert udpmux.stun_class(b"\x80" + data[1:]) is None
    assert udpmux.stun_class(data[:19]) is None
    no_colon = request("x")
    no_colon.attributes["USERNAME"] = "nocolon"
    assert stun_local_ufrag(bytes(no_colon)) is None
    assert stun_local_ufrag(data[:24]) is None  # truncated: no attribute fits


def test_the_integrity_check_agrees_with_aioice() -> None:
    message = request("ufA", "theirs")
    message.attributes["ICE-CONTROLLED"] = 5
    message.add_message_integrity(b"secret")  # adds FINGERPRINT after it, too
    data = bytes(message)
    assert stun.parse_message(data).check_message_integrity(b"secret")
    assert udpmux.stun_integrity_ok(data, b"secret")
    assert not udpmux.stun_integrity_ok(data, b"secreT")
    at = data.index(b"ufA")
    tampered = data[:at] + b"ufB" + data[at + 3:]
    assert not udpmux.stun_integrity_ok(tampered, b"secret")
    assert not udpmux.stun_integrity_ok(bytes(request("ufA")), b"secret")


# -- the aioice hook ------------------------------------------------------------------------
def test_aioice_is_the_pinned_version_with_the_hook_points() -> None:
    assert aioice.__version__ == hooks.AIOICE_VERSION, (
        "aioice changed: re-verify Connection.get_component_candidates, StunProtocol "
        "(connection_made, datagram_received, local_candidate, transport.sendto/close) and "
        "Connection._local_username, then update hooks.AIOICE_VERSION")
    original = inspect.getsource(hooks._original_component_candidates)
    assert "local_addr=(address, 0)" in original and "StunProtocol(self)" in original
    assert "self._protocols += host_protocols" in original
    assert "self.turn_server" in original  # TURN candidates still come from here
    init = inspect.getsource(aioice.ice.Connection.__init__)
    assert "self._local_username = local_username" in init
    stun_protocol = inspect.getsource(aioice.ice.StunProtocol)
    for needle in ("def connection_made", "self.transport.sendto(", "self.transport.close()",
                   "def connection_lost", "self.local_candidate.component"):
        assert needle in stun_protocol, needle
    # aiortc gathers only inside setLocalDescription (what mark_peer_connection wraps).
    set_local = inspect.getsource(RTCPeerConnection.setLocalDescription)
    assert "await self.__gather()" in set_local
    source = inspect.getsource(RTCPeerConnection)
    assert source.count("self.__gather()") == 1


@pytest.fixture
async def loopback_media(mux: UdpMux) -> AsyncIterator[NodeMedia]:
    hooks.restrict_host_addresses(("127.0.0.1",))
    hooks.install_node_media()
    try:
        yield NodeMedia(mux=mux, host="127.0.0.1")
    finally:
        hooks.restrict_host_addresses(())


def candidates(sdp: str) -> list[tuple[str, int]]:
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            out.append((fields[4], int(fields[5])))
    return out


def ufrag_of(sdp: str) -> str:
    return next(ln.split(":", 1)[1] for ln in sdp.splitlines() if ln.startswith("a=ice-ufrag:"))


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def test_marked_aiortc_connections_run_dtls_srtp_and_sctp_over_the_one_socket(
        loopback_media: NodeMedia) -> None:
    mux = loopback_media.mux
    assert mux is not None
    pairs = []
    try:
        for _ in range(3):
            client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            node = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            hooks.mark_peer_connection(node, loopback_media)
            pairs.append((client, node))
            client.addTrack(VideoStreamTrack())
            client.createDataChannel("chat")
            tracks: asyncio.Queue[Any] = asyncio.Queue()
            node.on("track", tracks.put_nowait)
            channels: asyncio.Queue[Any] = asyncio.Queue()
            node.on("datachannel", channels.put_nowait)
            await negotiate(client, node)
            # one per m-line, all bundled on one ICE connection
            assert set(candidates(node.localDescription.sdp)) == {("127.0.0.1", mux.address[1])}
            assert all(port != mux.address[1] for _, port in
                       candidates(client.localDescription.sdp))  # unmarked: its own socket
            assert mux.endpoint(ufrag_of(node.localDescription.sdp)) is not None
            track = await asyncio.wait_for(tracks.get(), STEP)
            frame = await asyncio.wait_for(track.recv(), STEP)  # SRTP, decoded
            assert (frame.width, frame.height) == (640, 480)
            channel = await asyncio.wait_for(channels.get(), STEP)  # SCTP over DTLS
            assert channel.label == "chat"
        assert mux.route_counts["ufrags"] == 3 and mux.dropped == 0
    finally:
        for client, node in pairs:
            await client.close()
            await node.close()
    assert mux.route_counts == {"ufrags": 0, "addresses": 0, "transactions": 0}


async def test_a_colliding_ufrag_is_replaced_before_it_is_announced(
        loopback_media: NodeMedia) -> None:
    mux = loopback_media.mux
    assert mux is not None
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    node = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    hooks.mark_peer_connection(node, loopback_media)
    try:
        client.createDataChannel("chat")
        await client.setLocalDescription(await client.createOffer())
        await node.setRemoteDescription(client.localDescription)
        taken = node.sctp.transport.transport.iceGatherer.getLocalParameters().usernameFragment
        squatter = Recorder()
        mux.attach(taken, squatter)  # another connection already has this ufrag
        await node.setLocalDescription(await node.createAnswer())
        announced = ufrag_of(node.localDescription.sdp)
        assert announced != taken and mux.endpoint(announced) is not None
        opened = asyncio.Event()
        node.on("datachannel", lambda channel: opened.set())
        await client.setRemoteDescription(node.localDescription)
        await asyncio.wait_for(opened.wait(), STEP)
        assert squatter.datagrams == []  # never given the other connection's checks
    finally:
        await client.close()
        await node.close()


async def test_a_thousand_ice_connections_share_one_port(loopback_media: NodeMedia) -> None:
    """Full ICE (checks, nomination), then a datagram each way on every connection."""
    mux = loopback_media.mux
    assert mux is not None
    n = 1000
    nodes = [aioice.ice.Connection(ice_controlling=False) for _ in range(n)]
    clients = [aioice.ice.Connection(ice_controlling=True) for _ in range(n)]
    try:
        async with asyncio.timeout(90):  # ~2 s on an idle 2-core machine
            with hooks.gathering_on(loopback_media):
                await asyncio.gather(*(c.gather_candidates() for c in nodes))
            await asyncio.gather(*(c.gather_candidates() for c in clients))
            assert {(c.host, c.port) for x in nodes for c in x.local_candidates} == {
                mux.address}
            assert mux.route_counts["ufrags"] == n
            for node, client in zip(nodes, clients, strict=True):
                node.remote_username, node.remote_password = (client.local_username,
                                                              client.local_password)
                client.remote_username, client.remote_password = (node.local_username,
                                                                  node.local_password)
                for mine, theirs in ((node, client), (client, node)):
                    for candidate in theirs.local_candidates:
                        await mine.add_remote_candidate(candidate)
                    await mine.add_remote_candidate(None)
            await asyncio.gather(*(c.connect() for c in (*nodes, *clients)))
            for i, client in enumerate(clients):
                await client.send(b"\x80up" + i.to_bytes(2, "big"))
            ups = await asyncio.gather(*(node.recv() for node in nodes))
            assert ups == [b"\x80up" + i.to_bytes(2, "big") for i in range(n)]
            for i, node in enumerate(nodes):
                await node.send(b"\x80dn" + i.to_bytes(2, "big"))
            downs = await asyncio.gather(*(client.recv() for client in clients))
            assert downs == [b"\x80dn" + i.to_bytes(2, "big") for i in range(n)]
            assert mux.dropped == 0 and mux.route_counts["addresses"] == n
    finally:
        await asyncio.gather(*(c.close() for c in (*nodes, *clients)))
    assert mux.route_counts == {"ufrags": 0, "addresses": 0, "transactions": 0}


async def test_connections_not_marked_keep_their_own_sockets(
        loopback_media: NodeMedia) -> None:
    plain = aioice.ice.Connection(ice_controlling=False)
    try:
        await plain.gather_candidates()
        [candidate] = plain.local_candidates
        assert candidate.host == "127.0.0.1"
        assert candidate.port != loopback_media.mux.address[1]  # type: ignore[union-attr]
    finally:
        await plain.close()


async def test_the_announced_address_replaces_the_local_one_without_a_mux() -> None:
    hooks.restrict_host_addresses(("127.0.0.1",))
    hooks.install_node_media()
    connection = aioice.ice.Connection(ice_controlling=False)
    try:
        with hooks.gathering_on(NodeMedia(mux=None, announced_address="127.0.0.2")):
            await connection.gather_candidates()
        [candidate] = connection.local_candidates
        assert candidate.host == "127.0.0.2" and candidate.type == "host"
    finally:
        await connection.close()
        hooks.restrict_host_addresses(())


# -- config and the node's lifetime ------------------------------------------------------
def test_udp_port_and_announced_address_from_yaml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "parley.yaml"
    path.write_text("sfu:\n  udp_port: 7882\n  announced_address: 198.51.100.4\n")
    config = load_config(path=path, env={})
    assert (config.sfu.udp_port, config.sfu.announced_address) == (7882, "198.51.100.4")
    config = load_config(path=path, env={"PARLEY_SFU_UDP_PORT": "7990",
                                         "PARLEY_SFU_ANNOUNCED_ADDRESS": "2001:db8::4"})
    assert (config.sfu.udp_port, config.sfu.announced_address) == (7990, "2001:db8::4")
    assert load_config(env={}).sfu.udp_port == 0  # default: a port per connection
    with pytest.raises(ConfigError, match=r"sfu\.udp_port"):
        load_config(env={"PARLEY_SFU_UDP_PORT": "70000"})
    with pytest.raises(ConfigError, match=r"sfu\.announced_address"):
        load_config(env={"PARLEY_SFU_ANNOUNCED_ADDRESS": "node.example"})


async def test_the_media_socket_is_open_exactly_while_the_node_runs() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SfuConfig(ice_addresses=("127.0.0.1",), udp_port=port)
    assert udpmux.current() is None
    async with node_media_socket(config) as media:
        assert media is not None and media.mux is not None
        assert udpmux.current() is media and media.mux.address == ("127.0.0.1", port)
        with pytest.raises(RuntimeError):
            async with node_media_socket(config):
                pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, \
                pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    assert udpmux.current() is None and media.mux.closed
    async with node_media_socket(SfuConfig()) as nothing:
        assert nothing is None and udpmux.current() is None
