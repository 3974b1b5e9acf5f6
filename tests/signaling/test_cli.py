"""The ``parley`` command as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import jwt
import pytest

from conference.config import SfuConfig
from signaling import __version__
from signaling.cli import main, worker_config
from signaling.config import NodeConfig
from tests.conftest import KEY, SECRET, Client

PARLEY = str(Path(sys.executable).parent / "parley")
REPO = Path(__file__).resolve().parents[2]
KEYS = f"{KEY}:{SECRET}"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PARLEY_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(extra)
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PARLEY, *args], capture_output=True, text=True, timeout=30,
                          env=clean_env(), check=False)


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    port: int
    stdout: Path
    stderr: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return f"stdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, argv: Sequence[str], port: int, *, cwd: Path | None = None,
    env: dict[str, str] | None = None, start_timeout: float = START_TIMEOUT,
) -> AsyncIterator[Server]:
    """Start ``argv`` in its own process group, wait for /healthz, always kill the group."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as out_f, err.open("wb") as err_f:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL, cwd=cwd,
            env=env or clean_env(), start_new_session=True)
    server = Server(proc, port, out, err)
    try:
        await wait_healthy(server, start_timeout)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left of the group
        await proc.wait()


async def wait_healthy(server: Server, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if server.proc.returncode is not None:
                pytest.fail(f"server exited with {server.proc.returncode}\n{server.output()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(server.url("/healthz")) as resp:
                    if resp.status == 200 and (await resp.json()) == {"status": "ok"}:
                        return
            if loop.time() > deadline:
                pytest.fail(f"no /healthz within {timeout}s\n{server.output()}")
            await asyncio.sleep(0.1)


async def mint_with_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        PARLEY, "token", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=clean_env())
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def join(http: aiohttp.ClientSession, server: Server, tok: str) -> tuple[Client, dict]:
    client = Client(await http.ws_connect(server.url("/rtc")))
    return client, await client.join(tok)


# -- one-shot commands --------------------------------------------------------
def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"parley {__version__}"


def test_token_prints_a_jwt_with_the_requested_claims() -> None:
    result = run_cli("token", "--keys", KEYS, "--room", "r", "--identity", "alice",
                     "--role", "listener", "--grant", "can_publish=true", "--ttl", "60")
    assert result.returncode == 0, result.stderr
    tok = result.stdout.strip()
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert claims["iss"] == KEY
    assert claims["sub"] == "alice"
    assert claims["name"] == "alice"
    assert claims["grants"] == {"room": "r", "role": "listener", "can_publish": True}
    assert claims["exp"] - claims["iat"] == 60


def test_token_signs_with_the_chosen_key() -> None:
    other = "s2-another-secret-for-tests-0000000000"
    result = run_cli("token", "--keys", f"{KEYS},k2:{other}", "--key", "k2",
                     "--room", "r", "--identity", "bob")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), other, algorithms=["HS256"])
    assert claims["iss"] == "k2"


@pytest.mark.parametrize("grant", ["can_fly=true", "can_publish=maybe"])
def test_token_with_a_bad_grant_exits_2(grant: str) -> None:
    result = run_cli("token", "--keys", KEYS, "--room", "r", "--identity", "alice",
                     "--grant", grant)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "bad grant" in result.stderr


def test_token_without_keys_exits_2() -> None:
    result = run_cli("token", "--room", "r", "--identity", "alice")
    assert result.returncode == 2
    assert "no keys" in result.stderr


# -- parley serve -------------------------------------------------------------
async def test_serve_accepts_cli_token_and_sigterm_disconnects_clients(tmp_path: Path) -> None:
    port = free_port()
    argv = [PARLEY, "serve", "--port", str(port), "--keys", KEYS]
    async with running(tmp_path, argv, port) as server, aiohttp.ClientSession() as http:
        tok = await mint_with_cli("--keys", KEYS, "--room", "r1", "--identity", "alice",
                                  "--role", "speaker")
        client, reply = await join(http, server, tok)
        assert reply["room"] == "r1"
        assert reply["participant"]["identity"] == "alice"

        assert "?token=" not in server.output()  # a production node prints no token
        server.proc.send_signal(signal.SIGTERM)
        bye = await client.expect("disconnect", timeout=10)
        assert bye["reason"] == "server_shutdown"
        close = await client.closed(timeout=10)
        assert close.type is aiohttp.WSMsgType.CLOSE
        assert close.data == aiohttp.WSCloseCode.GOING_AWAY
        code = await asyncio.wait_for(server.proc.wait(), 8)
        assert code == 0, server.output()


async def test_serve_sets_its_startup_objects_aside_from_garbage_collection(
        tmp_path: Path) -> None:
    port = free_port()
    argv = [PARLEY, "serve", "--port", str(port), "--keys", KEYS]
    async with running(tmp_path, argv, port) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url("/metrics")) as resp:
            text = await resp.text()
    frozen = next(float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("parley_node_gc_frozen_objects "))
    assert frozen > 10_000  # modules, the app, its routes: never walked by a full collection


async def test_serve_without_keys_warns_and_prints_a_working_join_link(tmp_path: Path) -> None:
    port = free_port()
    async with running(tmp_path, [PARLEY, "serve", "--port", str(port)], port) as server:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        pattern = re.compile(rf"http://127\.0\.0\.1:{port}/\?token=(\S+)")
        while not (match := pattern.search(server.stdout.read_text())):
            assert loop.time() < deadline, server.output()
            await asyncio.sleep(0.05)
        assert "DEVELOPMENT MODE" in server.stderr.read_text()
        async with aiohttp.ClientSession() as http:
            async with http.get(match.group(0)) as page:
                assert page.status == 200
            client, reply = await join(http, server, unquote(match.group(1)))
            assert reply["room"] == "demo"
            await client.ws.close()


async def test_make_run_serves_healthz(tmp_path: Path) -> None:
    port = free_port()
    argv = ["make", "--no-print-directory", "run", f"PORT={port}"]
    async with running(tmp_path, argv, port, cwd=REPO, env=clean_env(PARLEY_PORT=str(port)),
                       start_timeout=100) as server:
        async with aiohttp.ClientSession() as http, http.get(server.url("/readyz")) as resp:
            assert resp.status == 200
            assert (await resp.json())["ready"] is True


def test_schema_prints_every_client_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"Join", "Offer", "Data", "ApproveSpeaker"} <= set(schema["$defs"])


def test_each_worker_takes_its_own_media_port() -> None:
    config = NodeConfig(sfu=SfuConfig(udp_port=7882))
    assert [worker_config(config, i).sfu.udp_port for i in range(3)] == [7882, 7883, 7884]
    assert worker_config(NodeConfig(), 2).sfu.udp_port == 0
