"""One UDP port per node (``sfu.udp_port``) and the announced address, end to end.

The one-socket test runs ``parley serve`` in its own process, so that the UDP
sockets counted (``/proc/<pid>/fd`` matched against ``/proc/net/udp``) are the
node's alone: two aiortc clients and a Chromium page meet in one room and every
media connection of the node shares that single socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from client.client import ParleyClient
from sfu.config import SfuConfig
from sfu.hooks import restrict_host_addresses
from tests.conftest import StartNode, make_config, token
from tests.e2e.browser import RECORD_PCS, STEP, MeetingPage, launch_chromium, wait_until
from tests.media_helpers import Peer
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, running

# The remote (node's) end of each connected peer connection's selected candidate pair.
SELECTED_REMOTES = """
async () => {
  const out = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "connected") continue;
    const stats = [...(await pc.getStats()).values()];
    const transport = stats.find((s) => s.type === "transport");
    const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    const remote = stats.find((s) => s.id === pair?.remoteCandidateId);
    if (remote) out.push([remote.address, remote.port]);
  }
  return out;
}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _decode(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    if len(host) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(host)[::-1]), int(port, 16)
    words = bytes.fromhex(host)
    raw = b"".join(words[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)


def udp_sockets(pid: int) -> list[tuple[str, int]]:
    """Local addresses of the UDP sockets process ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[9]) in inodes:
                    found.append(_decode(fields[1]))
    return sorted(found)


def answer_candidates(sdp: str) -> set[tuple[str, int]]:
    return {(ln.split()[4], int(ln.split()[5])) for ln in sdp.splitlines()
            if ln.startswith("a=candidate:")}


@pytest.fixture
def loopback_clients() -> Iterator[None]:
    """This process's aiortc clients gather on 127.0.0.1 only."""
    restrict_host_addresses(("127.0.0.1",))
    yield None
    restrict_host_addresses(())


async def bots(url: str, room: str, *identities: str) -> list[Peer]:
    peers = []
    for identity in identities:
        client = ParleyClient(url, token(room, identity))
        await client.connect()
        peers.append(Peer(client))
    return peers


async def open_page(browser: object, url: str, room: str, identity: str) -> MeetingPage:
    """Like MeetingPage.join, but the page's peer connections are recorded."""
    context = await browser.new_context(  # type: ignore[attr-defined]
        permissions=["camera", "microphone"], viewport={"width": 1280, "height": 720})
    await context.add_init_script(RECORD_PCS)
    meeting = MeetingPage(await context.new_page(), identity)
    await meeting.page.goto(url.rstrip("/") + "/?token=" + token(room, identity))
    await meeting.wait_ready()
    meeting.participant_id = await meeting.page.evaluate("parley.participantId")
    return meeting


async def test_two_aiortc_clients_and_chromium_share_the_nodes_one_udp_socket(
        tmp_path: Path, loopback_clients: None) -> None:
    port, udp_port = free_port(), free_udp_port()
    env = clean_env(PARLEY_KEYS=KEYS, PARLEY_SFU_UDP_PORT=str(udp_port),
                    PARLEY_SFU_ICE_ADDRESSES="127.0.0.1", PARLEY_LOG_LEVEL="warning")
    argv = [PARLEY, "serve", "--port", str(port)]
    async with running(tmp_path, argv, port, env=env) as server, launch_chromium() as browser:
        pid = server.proc.pid
        assert udp_sockets(pid) == [("127.0.0.1", udp_port)]  # opened at start
        peers = await bots(server.url("/"), "room", "bot-a", "bot-b")
        try:
            a, b = peers
            for peer in peers:
                await peer.client.publish(VideoStreamTrack(), AudioStreamTrack())
            page = await open_page(browser, server.url("/"), "room", "web")
            ids = {p.client.participant_id for p in peers}
            await page.wait_decoding(sorted(ids))
            for viewer, other in ((a, b), (b, a)):
                await viewer.wait_frames(other.client.participant_id, 15, timeout=STEP)
                await viewer.wait_frames(page.participant_id, 15, timeout=STEP)
                await viewer.wait_frames(page.participant_id, 10, kind="audio", timeout=STEP)

            # Every connection of every participant ends on the node's one port ...
            async def page_connected() -> list[list[object]] | None:
                remotes: list[list[object]] = await page.page.evaluate(SELECTED_REMOTES)
                return remotes if len(remotes) == 2 else None

            remotes = await wait_until(page_connected, "both page connections")
            assert remotes == [["127.0.0.1", udp_port]] * 2
            for peer in peers:
                for pc in (peer.client.publisher, peer.client.subscriber):
                    assert pc is not None and pc.connectionState == "connected"
                    sdp = pc.remoteDescription.sdp
                    assert answer_candidates(sdp) == {("127.0.0.1", udp_port)}
            # ... and the node holds exactly one UDP socket for six peer connections,
            # where the counting finds this process's own four client sockets.
            assert udp_sockets(pid) == [("127.0.0.1", udp_port)]
            assert len(udp_sockets(os.getpid())) >= 4
            # Frames of several packets leave the shared socket in one segmented send each
            async with aiohttp.ClientSession() as http, \
                    http.get(server.url("/metrics")) as resp:
                metrics = await resp.text()
            segmented = next(float(line.split()[-1]) for line in metrics.splitlines()
                             if line.startswith("parley_sfu_segmented_sends_total"))
            assert segmented > 0, "no GSO send on the node's one UDP socket"
            assert not page.errors and not await page.js_errors()
            await page.leave()
        finally:
            for peer in peers:
                await peer.close()
        await asyncio.sleep(0.5)
        assert udp_sockets(pid) == [("127.0.0.1", udp_port)]


@pytest.mark.parametrize("shared_port", [True, False], ids=["udp_port", "own_ports"])
async def test_the_sdp_answer_and_offer_carry_the_announced_address(
        start_node: StartNode, loopback_clients: None, shared_port: bool) -> None:
    """127.0.0.2 stands for a public address the node cannot bind: what it announces, not
    where its sockets are (127.0.0.1)."""
    udp_port = free_udp_port() if shared_port else 0
    node = await start_node(make_config(sfu=SfuConfig(
        ice_addresses=("127.0.0.1",), udp_port=udp_port, announced_address="127.0.0.2")))
    client = ParleyClient(node.url("/"), token("room", "alice"))
    try:
        await client.connect()
        await client.publish(VideoStreamTrack())
        assert client.publisher is not None
        answer = answer_candidates(client.publisher.remoteDescription.sdp)

        async def subscriber_offer() -> str | None:
            pc = client.subscriber
            return pc.remoteDescription.sdp if pc and pc.remoteDescription else None

        offer = answer_candidates(await wait_until(subscriber_offer, "the subscriber offer"))
        for candidates in (answer, offer):
            assert {host for host, _ in candidates} == {"127.0.0.2"}
            ports = {p for _, p in candidates}
            if shared_port:
                assert ports == {udp_port}
            else:
                assert len(ports) == 1 and 0 not in ports
    finally:
        await client.close()
