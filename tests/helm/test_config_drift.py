"""The chart and the node agree: the rendered ConfigMap, Secret and container environment
start real nodes, through the container's own command (the per-pod media script), that
become ready and let a token minted the way NOTES.txt says join.

The ConfigMap's files are laid out in a directory that stands for its mount, /etc/parley.
The only changes to what a pod gets keep the test on loopback: ``--host 127.0.0.1 --port P``
flags (the start script passes them on) and ``PARLEY_SFU_ICE_ADDRESSES=127.0.0.1``, so that
the media port binds on loopback; the downward API gives ``status.hostIP`` = 127.0.0.1 and a
pod name whose media port (base + ordinal) is free.

The clustered variants (``redis.url``, and ``redis.existingSecret`` with the keys in
``auth.existingSecret``) point the chart at a real redis-server on loopback and start two
pods. The bundled Redis (``redis.bundled.enabled``) is reached through a Service host name
that does not resolve outside Kubernetes: its rendered config is checked by shape (the URL
names the bundled Service, the node's own loader accepts the file), not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from signaling.config import load_config
from tests.cluster.redisproc import RedisServer
from tests.conftest import Client
from tests.helm.chart import node_container, only, render, secret_data
from tests.signaling.test_cli import PARLEY, Server, clean_env, free_port, running

MOUNT = "/etc/parley/"
NODE_PORT_BASE = 30782
# Every cluster setting the chart passes through (config.cluster, config.redis): a name the
# node does not know would stop it at start.
TUNING = ("config.cluster.heartbeat_interval=1", "config.cluster.node_ttl=2",
          "config.cluster.state_ttl=600", "config.cluster.relay_heartbeat_interval=1",
          "config.cluster.relay_timeout=2", "config.cluster.request_timeout=2",
          "config.redis.timeout=1", "config.redis.retry_for=2")
USER_KEYS = "ops:a-secret-of-32-bytes-or-more-000000"


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def free_ordinals(count: int) -> list[int]:
    """Pod ordinals whose media ports (base + ordinal) are free on loopback."""
    found = [o for o in range(100) if udp_port_free(NODE_PORT_BASE + o)][:count]
    if len(found) < count:
        pytest.fail("no free UDP ports above the node-port base")
    return found


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


@contextlib.asynccontextmanager
async def pod(docs: list[dict[str, Any]], tmp_path: Path,
              ordinal: int) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    """Pod ``parley-<ordinal>`` of the rendered StatefulSet, running; with its environment."""
    mount = tmp_path / "etc-parley"
    if not mount.exists():
        mount_config_map(only(docs, "ConfigMap", "parley"), mount)
    container = node_container(docs)
    command = [arg.replace(MOUNT, f"{mount}/") for arg in container["command"]]
    downward = {"metadata.name": f"parley-{ordinal}", "status.hostIP": "127.0.0.1"}
    env = pod_environment(docs, container, downward)
    assert env["PARLEY_SFU_ANNOUNCED_ADDRESS"] == "127.0.0.1"
    port = free_port()
    path = f"{Path(PARLEY).parent}{os.pathsep}{os.environ['PATH']}"  # `parley` as in the image
    node_env = clean_env(**env, PATH=path, PARLEY_SFU_ICE_ADDRESSES="127.0.0.1")
    argv = [*command, "--host", "127.0.0.1", "--port", str(port)]
    logs = tmp_path / f"parley-{ordinal}"
    logs.mkdir()
    async with running(logs, argv, port, env=node_env) as server:
        # The start script gave this pod its own media port.
        assert not udp_port_free(NODE_PORT_BASE + ordinal)
        yield server, env


async def mint(env: dict[str, str], room: str) -> str:
    """NOTES.txt: `parley token` in the pod signs with the keys of its environment."""
    minted = await asyncio.to_thread(
        subprocess.run,
        [PARLEY, "token", "--room", room, "--identity", "alice", "--role", "moderator"],
        capture_output=True, text=True, timeout=30, env=clean_env(**env), check=True)
    return minted.stdout.strip()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def until_ready(http: aiohttp.ClientSession, server: Server) -> str:
    """/readyz 200 (a clustered node is ready once its record is in Redis); its node id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        status, body = await get(http, server.url("/readyz"))
        if status == 200:
            return str(body["node"])
        if loop.time() > deadline:
            pytest.fail(f"/readyz {status} {body}\n{server.output()}")
        await asyncio.sleep(0.1)


async def test_default_chart_config_and_environment_start_a_ready_node(tmp_path: Path) -> None:
    docs = render()
    [ordinal] = free_ordinals(1)
    async with pod(docs, tmp_path, ordinal) as (server, env), aiohttp.ClientSession() as http:
        assert env["PARLEY_KEYS"].startswith("default:")
        status, _ = await get(http, server.url("/readyz"))
        assert status == 200, server.output()
        assert (await get(http, server.url("/livez")))[0] == 200
        client = Client(await http.ws_connect(server.url("/rtc")))
        joined = await client.join(await mint(env, "demo"))
        assert joined["room"] == "demo"
        await client.ws.close()
    logs = server.stderr.read_text().splitlines()
    assert logs and all(json.loads(line)["level"] for line in logs if line.strip())


def clustered_docs(variant: str, redis_server: RedisServer) -> list[dict[str, Any]]:
    """The chart pointed at ``redis_server``: by redis.url, or by Secrets of the user's."""
    if variant == "url":
        return render("replicaCount=2", f"redis.url={redis_server.url}", *TUNING)
    docs = render("replicaCount=2", "auth.existingSecret=parley-keys",
                  "redis.existingSecret=parley-redis", *TUNING)
    assert not [d for d in docs if d["kind"] == "Secret"]  # the user's, not the chart's
    return [*docs,
            {"kind": "Secret", "metadata": {"name": "parley-keys"},
             "stringData": {"PARLEY_KEYS": USER_KEYS}},
            {"kind": "Secret", "metadata": {"name": "parley-redis"},
             "stringData": {"redis-url": redis_server.url}}]


async def node_records(redis: Redis) -> dict[str, dict[str, Any]]:
    return {key.removeprefix("parley:node:"): json.loads(await redis.get(key) or "null")
            async for key in redis.scan_iter(match="parley:node:*")}


@pytest.mark.parametrize("variant", ["url", "existing-secret"])
async def test_clustered_chart_starts_two_nodes_that_register_and_drain(
        tmp_path: Path, variant: str) -> None:
    redis_server = RedisServer(password="chart-redis-password")
    redis_server.start()
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        docs = clustered_docs(variant, redis_server)
        config = yaml.safe_load(only(docs, "ConfigMap", "parley")["data"]["config.yaml"])
        assert "url" not in config.get("redis", {})  # the URL (and password) stay in Secrets
        await two_nodes(docs, tmp_path, redis, redis_server.url)
    finally:
        await redis.aclose()
        redis_server.stop()


async def two_nodes(docs: list[dict[str, Any]], tmp_path: Path, redis: Redis,
                    url: str) -> None:
    first, second = free_ordinals(2)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        a, env = await stack.enter_async_context(pod(docs, tmp_path, first))
        b, _ = await stack.enter_async_context(pod(docs, tmp_path, second))
        assert env["PARLEY_REDIS_URL"] == url  # with its password, from a Secret
        nodes = {await until_ready(http, a): a, await until_ready(http, b): b}
        records = await node_records(redis)
        assert set(records) == set(nodes) and len(nodes) == 2
        assert all(r["state"] == "serving" for r in records.values()), records

        # A meeting on one node; SIGTERM to the node holding it (the kubelet's, after
        # preStop): it stops being ready but stays alive while the meeting goes on.
        client = Client(await http.ws_connect(a.url("/rtc")))
        assert (await client.join(await mint(env, "demo")))["room"] == "demo"
        owner_id = await redis.get("parley:room:demo")
        assert owner_id in nodes
        owner = nodes[owner_id]
        owner.proc.send_signal(signal.SIGTERM)
        status, body = await until_unready(http, owner)
        assert (status, body["draining"]) == (503, True)
        assert (await get(http, owner.url("/livez")))[0] == 200
        assert (await node_records(redis))[owner_id]["state"] == "draining"
        other = next(s for s in nodes.values() if s is not owner)
        assert (await get(http, other.url("/readyz")))[0] == 200

        # Nobody left in its rooms: the node ends its drain, leaves Redis and exits 0.
        await client.ws.close()
        assert await asyncio.wait_for(owner.proc.wait(), 15) == 0, owner.output()
        assert set(await node_records(redis)) == set(nodes) - {owner_id}


async def until_unready(http: aiohttp.ClientSession,
                        server: Server) -> tuple[int, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        status, body = await get(http, server.url("/readyz"))
        if status != 200 or loop.time() > deadline:
            return status, body
        await asyncio.sleep(0.05)


def test_bundled_redis_config_points_at_the_bundled_service_and_loads(tmp_path: Path) -> None:
    docs = render("redis.bundled.enabled=true", "replicaCount=3", *TUNING)
    text = only(docs, "ConfigMap", "parley")["data"]["config.yaml"]
    config = yaml.safe_load(text)
    service = only(docs, "Service", "parley-redis")
    port = service["spec"]["ports"][0]["port"]
    assert config["redis"]["url"] == f"redis://{service['metadata']['name']}:{port}/0"
    redis_pod = only(docs, "Deployment", "parley-redis")["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= redis_pod["labels"].items()
    assert config["cluster"]["drain_timeout"] == 60
    assert "PARLEY_REDIS_URL" not in secret_data(only(docs, "Secret"))
    (tmp_path / "config.yaml").write_text(text)
    loaded = load_config(path=tmp_path / "config.yaml", env={})  # unknown names would fail
    assert loaded.redis.url == config["redis"]["url"]
    assert (loaded.cluster.node_ttl, loaded.cluster.drain_timeout) == (2.0, 60.0)
