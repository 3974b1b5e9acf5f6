"""``parley serve --workers N``: N nodes on one port and one Redis."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from redis.asyncio import Redis

from tests.cluster.redisproc import RedisServer
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, run_cli


def test_more_than_one_worker_without_redis_is_refused_with_a_reason() -> None:
    result = run_cli("serve", "--workers", "2", "--keys", KEYS)
    assert result.returncode == 2
    assert "--redis-url" in result.stderr and "Redis" in result.stderr


async def test_two_workers_register_two_nodes_in_redis_and_leave_on_sigterm(
        tmp_path: Path, redis_server: RedisServer, redis: Redis) -> None:
    port = free_port()
    out = (tmp_path / "out.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PARLEY, "serve", "--workers", "2", "--port", str(port), "--keys", KEYS,
        "--redis-url", redis_server.url, stdout=out, stderr=asyncio.subprocess.STDOUT,
        env=clean_env(PARLEY_CLUSTER_HEARTBEAT_INTERVAL="0.5", PARLEY_CLUSTER_NODE_TTL="2"))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        nodes: list[str] = []
        while loop.time() < deadline:
            nodes = [k async for k in redis.scan_iter(match="parley:node:*")]
            if len(nodes) == 2:
                break
            await asyncio.sleep(0.2)
        log = (tmp_path / "out.log").read_text()
        assert len(nodes) == 2, log
        assert log.count(f"listening on http://127.0.0.1:{port}") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        out.close()
    assert code == 0, (tmp_path / "out.log").read_text()
    assert [k async for k in redis.scan_iter(match="parley:node:*")] == []
