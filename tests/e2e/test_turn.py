"""TURN for real: Debian's coturn on loopback, with the credentials Parley mints.

coturn runs with ``use-auth-secret`` and ``static-auth-secret`` = ``ice.turn_secret``
(the configuration README.md recommends, minus TLS and with loopback peers
allowed). Clients forced to relay-only ICE (an aiortc client with
``iceTransportPolicy="relay"``, a Chromium page whose ``RTCPeerConnection`` is
wrapped to ask for it) publish and receive through the relay. Without coturn the
tests are skipped locally and fail in CI (``PARLEY_CI=1``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.stun
import aioice.turn
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceTransportPolicy
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from client.client import ParleyClient
from sfu.config import SfuConfig
from sfu.hooks import restrict_host_addresses
from signaling.config import IceConfig
from signaling.ice import turn_credentials
from tests.conftest import StartNode, make_config, token
from tests.e2e.browser import STEP, MeetingPage, launch_chromium, wait_until
from tests.media_helpers import Peer

SECRET = "turn-secret-for-tests-only"
REALM = "parley.test"

# Every RTCPeerConnection the page creates asks for relay-only ICE and is recorded.
RELAY_ONLY = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (config, ...rest) {
    const pc = new Native({ ...(config || {}), iceTransportPolicy: "relay" }, ...rest);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""
# The local candidate types of the selected pairs of the page's connected connections.
SELECTED_LOCAL_TYPES = """
async () => {
  const out = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "connected") continue;
    const stats = [...(await pc.getStats()).values()];
    const transport = stats.find((s) => s.type === "transport");
    const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    const local = stats.find((s) => s.id === pair?.localCandidateId);
    out.push([local?.candidateType, pc.getConfiguration().iceTransportPolicy]);
  }
  return out;
}
"""


@dataclass(frozen=True)
class Coturn:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def coturn_config(port: int, secret: str, tmp: Path) -> str:
    """The configuration README.md recommends, narrowed to a loopback test."""
    return "\n".join([
        f"listening-port={port}",
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        "min-port=49152",
        "max-port=65535",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        "allow-loopback-peers",  # the test's node is on 127.0.0.1; never in production
        f"userdb={tmp / 'turndb'}",
        f"pidfile={tmp / 'turnserver.pid'}",
        f"log-file={tmp / 'turn.log'}",
        "simple-log",
        "no-stdout-log",
        "verbose",
        "",
    ])


async def _stun_answers(port: int) -> bool:
    """coturn answers a STUN Binding request on ``port``."""
    request = aioice.stun.Message(message_method=aioice.stun.Method.BINDING,
                                  message_class=aioice.stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(bytes(request), ("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return aioice.stun.parse_message(data).transaction_id == request.transaction_id


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    executable = shutil.which("turnserver")
    if executable is None:
        if os.environ.get("PARLEY_CI") == "1":
            pytest.fail("coturn (turnserver) is not installed: TURN tests must run in CI")
        pytest.skip("coturn (turnserver) is not installed")
    port = _free_port()
    conf = tmp_path / "turnserver.conf"
    conf.write_text(coturn_config(port, SECRET, tmp_path))
    server = Coturn(port=port, log=tmp_path / "turn.log")
    proc = await asyncio.create_subprocess_exec(
        executable, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not await _stun_answers(port):
            assert proc.returncode is None, f"turnserver exited:\n{server.log_text()[-2000:]}"
            assert time.monotonic() < deadline, "turnserver did not answer within 10 s"
            await asyncio.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _allocate(server: Coturn, username: str, password: str) -> tuple[str, int]:
    """One TURN allocation over UDP; returns the relayed address."""
    transport, _ = await aioice.turn.create_turn_endpoint(
        asyncio.DatagramProtocol, server_addr=("127.0.0.1", server.port),
        username=username, password=password, lifetime=60)
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_parley_s_minted_credentials_allocate_and_expired_ones_are_refused(
        coturn: Coturn) -> None:
    username, password = turn_credentials(SECRET, "alice", ttl=600)
    host, port = await _allocate(coturn, username, password)
    assert host == "127.0.0.1" and 49152 <= port <= 65535

    expired = turn_credentials(SECRET, "mallory", ttl=600, now=time.time() - 1200)
    with pytest.raises(aioice.stun.TransactionFailed) as refused:
        await _allocate(coturn, *expired)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401
    forged = turn_credentials("another-secret", "eve", ttl=600)
    with pytest.raises(aioice.stun.TransactionFailed):
        await _allocate(coturn, *forged)

    def allocations(user: str) -> int:
        return sum(1 for line in coturn.log_text().splitlines()
                   if f"user <{user}>:" in line and "ALLOCATE processed, success" in line)

    await wait_until(lambda: _async(allocations(username) == 1 or None), "coturn's log")
    assert allocations(expired[0]) == 0 and allocations(forged[0]) == 0


async def _async(value: Any) -> Any:
    return value


def _relay_only(client: ParleyClient) -> None:
    """The client's next peer connections gather relay candidates only (the joined
    reply's ``ice_servers``, i.e. Parley's minted credentials, unchanged)."""
    servers = client._config.iceServers
    assert servers and servers[0].username, "joined carried no TURN credentials"
    client._config = RTCConfiguration(iceServers=servers,
                                      bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                                      iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def _selected_local_type(pc: Any) -> str:
    connection = pc.sctp.transport.transport.iceGatherer._connection if pc.sctp else (
        pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection)
    pair = connection._nominated.get(1)
    return str(pair.local_candidate.type) if pair else ""


@pytest.fixture
def loopback_clients() -> Any:
    restrict_host_addresses(("127.0.0.1",))
    yield
    restrict_host_addresses(())


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("loopback_clients")
async def test_relay_only_aiortc_and_chromium_publish_and_receive_through_coturn(
        coturn: Coturn, start_node: StartNode) -> None:
    node = await start_node(make_config(
        sfu=SfuConfig(ice_addresses=("127.0.0.1",)),
        ice=IceConfig(turn_urls=(coturn.url,), turn_secret=SECRET, turn_ttl=600)))
    bot = ParleyClient(node.url("/"), token("room", "bot"))
    await bot.connect()
    _relay_only(bot)
    peer = Peer(bot)
    try:
        await bot.publish(VideoStreamTrack(), AudioStreamTrack())
        async with launch_chromium() as browser:
            context = await browser.new_context(permissions=["camera", "microphone"],
                                                viewport={"width": 1280, "height": 720})
            await context.add_init_script(RELAY_ONLY)
            page = MeetingPage(await context.new_page(), "web")
            await page.page.goto(node.url("/").rstrip("/") + "/?token=" + token("room", "web"))
            await page.wait_ready()
            web_id = await page.page.evaluate("parley.participantId")

            await page.wait_decoding([bot.participant_id])
            await peer.wait_frames(web_id, 15, timeout=STEP)
            await peer.wait_frames(web_id, 10, kind="audio", timeout=STEP)

            async def both_page_pcs() -> list[list[str]] | None:
                types: list[list[str]] = await page.page.evaluate(SELECTED_LOCAL_TYPES)
                return types if len(types) == 2 else None

            assert await wait_until(both_page_pcs, "the page's two connections") == [
                ["relay", "relay"]] * 2
            assert not page.errors and not await page.js_errors()
            await page.close()

        for pc in (bot.publisher, bot.subscriber):
            assert pc is not None and pc.connectionState == "connected"
            assert _selected_local_type(pc) == "relay"
        # coturn allocated for both participants' connections (two each).
        log = coturn.log_text()
        for identity in ("bot", "web"):
            lines = [ln for ln in log.splitlines() if "ALLOCATE processed, success" in ln
                     and f":{identity}>" in ln]
            assert len(lines) >= 2, f"coturn logged {len(lines)} allocations for {identity}"
    finally:
        await peer.close()
