"""The chart and the node agree: the rendered ConfigMap, Secret and container environment of
the default values start a real node, through the container's own command (the per-pod
media script), that becomes ready and lets a token minted the way NOTES.txt says join.

The ConfigMap's files are laid out in a directory that stands for its mount, /etc/parley.
The only changes to what a pod gets keep the test on loopback: ``--host 127.0.0.1 --port P``
flags (the start script passes them on) and ``PARLEY_SFU_ICE_ADDRESSES=127.0.0.1``, so that
the media port binds on loopback; the downward API gives ``status.hostIP`` = 127.0.0.1 and a
pod name whose media port (base + ordinal) is free.

Planned: the same test for the Redis variant (``redis.bundled.enabled``) once the node knows
the ``redis`` and ``cluster`` settings, against a local redis-server.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Client
from tests.helm.chart import node_container, only, render, secret_data
from tests.signaling.test_cli import PARLEY, clean_env, free_port, running

MOUNT = "/etc/parley/"
NODE_PORT_BASE = 30782


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def free_ordinal() -> int:
    """A pod ordinal whose media port (base + ordinal) is free on loopback."""
    for ordinal in range(100):
        if udp_port_free(NODE_PORT_BASE + ordinal):
            return ordinal
    pytest.fail("no free UDP port above the node-port base")


def pod_environment(docs: list[dict[str, Any]], container: dict[str, Any],
                    downward: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would build it from the rendered objects."""
    secrets = {s["metadata"]["name"]: secret_data(s) for s in docs if s["kind"] == "Secret"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def mount_config_map(config_map: dict[str, Any], directory: Path) -> None:
    """The ConfigMap's files, with paths into the mount pointed at ``directory``."""
    directory.mkdir()
    for name, text in config_map["data"].items():
        (directory / name).write_text(text.replace(MOUNT, f"{directory}/"))


async def test_default_chart_config_and_environment_start_a_ready_node(tmp_path: Path) -> None:
    docs = render()
    mount = tmp_path / "etc-parley"
    mount_config_map(only(docs, "ConfigMap", "parley"), mount)
    container = node_container(docs)
    command = [arg.replace(MOUNT, f"{mount}/") for arg in container["command"]]
    ordinal = free_ordinal()
    downward = {"metadata.name": f"parley-{ordinal}", "status.hostIP": "127.0.0.1"}
    env = pod_environment(docs, container, downward)
    assert env["PARLEY_KEYS"].startswith("default:")
    assert env["PARLEY_SFU_ANNOUNCED_ADDRESS"] == "127.0.0.1"

    port = free_port()
    path = f"{Path(PARLEY).parent}{os.pathsep}{os.environ['PATH']}"  # `parley` as in the image
    node_env = clean_env(**env, PATH=path, PARLEY_SFU_ICE_ADDRESSES="127.0.0.1")
    argv = [*command, "--host", "127.0.0.1", "--port", str(port)]
    async with running(tmp_path, argv, port, env=node_env) as server:
        # The start script gave this pod its own media port.
        assert not udp_port_free(NODE_PORT_BASE + ordinal)
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
