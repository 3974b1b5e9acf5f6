"""``parley serve`` stops within its grace period whatever its clients do."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from tests.conftest import Client, token
from tests.signaling.rawsock import SMALL_BUFFER, open_socket, send_json, upgrade
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, running

GRACE = 2.0
MARGIN = 3.0


async def test_sigterm_exits_within_the_grace_period_with_a_client_that_stopped_reading(
        tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(PARLEY_SHUTDOWN_GRACE=str(GRACE),
                    # only the grace period, not the send deadline, can end this client
                    PARLEY_SIGNALING_SEND_TIMEOUT="60",
                    PARLEY_SIGNALING_SEND_QUEUE_SIZE="100000",
                    PARLEY_SIGNALING_RATE_LIMIT_PER_SECOND="10000",
                    PARLEY_SIGNALING_RATE_LIMIT_BURST="10000")
    argv = [PARLEY, "serve", "--port", str(port), "--keys", KEYS]
    async with running(tmp_path, argv, port, env=env) as server, \
            aiohttp.ClientSession() as http:
        sock = await open_socket("127.0.0.1", port, rcvbuf=SMALL_BUFFER)
        try:
            await upgrade(sock, "127.0.0.1", port)
            await send_json(sock, {"type": "join", "token": token("r1", "stuck"),
                                   "media": False})
            flooder = Client(await http.ws_connect(server.url("/rtc")))
            joined = await flooder.join(token("r1", "flooder"))
            if not joined["participants"]:  # the raw client's join is still on its way
                await flooder.expect("participant-joined")
            for _ in range(400):
                await flooder.ws.send_str(json.dumps({"type": "data", "payload": "x" * 30_000}))
            await flooder.send(type="ping")
            await flooder.expect("pong")
            loop = asyncio.get_running_loop()
            started = loop.time()
            server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(server.proc.wait(), GRACE + MARGIN + 5)
            elapsed = loop.time() - started
        finally:
            sock.close()
        assert code == 0, server.output()
        assert elapsed < GRACE + MARGIN, f"exit took {elapsed:.1f}s\n{server.output()}"
