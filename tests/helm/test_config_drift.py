"""The chart and the node agree: the rendered ConfigMap, Secret and container environment of
the default values start a real ``parley serve`` that becomes ready and lets a token minted
the way NOTES.txt says join.

The only changes to what a pod gets are the listen addresses, so that the test touches only
loopback: ``--host 127.0.0.1 --port P`` flags, and the SFU's UDP port moved to a free one and
bound on 127.0.0.1 (``PARLEY_SFU_UDP_PORT``, ``PARLEY_SFU_ICE_ADDRESSES``), over the rendered
file and environment. The downward API gives ``status.hostIP`` = 127.0.0.1.

Planned: the same test for the Redis variant (``redis.bundled.enabled``) once the node knows
the ``redis`` and ``cluster`` settings, against a local redis-server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Client
from tests.helm.chart import node_container, only, render, secret_data
from tests.signaling.test_cli import PARLEY, clean_env, free_port, running

CONFIG_PATH = "/etc/parley/config.yaml"
DOWNWARD_API = {"metadata.name": "parley-0", "status.hostIP": "127.0.0.1"}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pod_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would build it from the rendered objects."""
    secrets = {s["metadata"]["name"]: secret_data(s) for s in docs if s["kind"] == "Secret"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = DOWNWARD_API[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


async def test_default_chart_config_and_environment_start_a_ready_node(tmp_path: Path) -> None:
    docs = render()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(only(docs, "ConfigMap", "parley")["data"]["config.yaml"])
    container = node_container(docs)
    command = [str(config_file) if arg == CONFIG_PATH else arg for arg in container["command"]]
    assert command[0] == "parley" and str(config_file) in command
    env = pod_environment(docs, container)
    assert env["PARLEY_KEYS"].startswith("default:")
    assert env["PARLEY_SFU_ANNOUNCED_ADDRESS"] == "127.0.0.1"

    port = free_port()
    loopback = {"PARLEY_SFU_UDP_PORT": str(free_udp_port()),
                "PARLEY_SFU_ICE_ADDRESSES": "127.0.0.1"}
    argv = [PARLEY, *command[1:], "--host", "127.0.0.1", "--port", str(port)]
    async with running(tmp_path, argv, port, env=clean_env(**env, **loopback)) as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url("/readyz")) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(server.url("/livez")) as resp:
                assert resp.status == 200
            # NOTES.txt: `parley token` in the pod signs with the keys of its environment.
            minted = await asyncio.to_thread(
                subprocess.run,
                [PARLEY, "token", "--room", "demo", "--identity", "alice", "--role", "moderator"],
                capture_output=True, text=True, timeout=30, env=clean_env(**env), check=True)
            client = Client(await http.ws_connect(server.url("/rtc")))
            joined = await client.join(minted.stdout.strip())
            assert joined["room"] == "demo"
            await client.ws.close()
        logs = server.stderr.read_text().splitlines()
        assert logs and all(json.loads(line)["level"] for line in logs if line.strip())
