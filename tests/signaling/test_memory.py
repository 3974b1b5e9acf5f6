"""The node's periodic malloc_trim: real glibc, a real node, its /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from signaling.config import ConfigError, load_config
from signaling.memory import (
    MemoryTrimmer,
    find_malloc_trim,
    limit_arenas,
    resident_bytes,
    trim_once,
)
from tests.conftest import StartNode, make_config
from tests.signaling.test_metrics import scrape, value

MIB = 1 << 20


def test_trim_gives_back_what_the_allocator_kept_after_a_burst() -> None:
    trim = find_malloc_trim()
    assert trim is not None, "this project's nodes run on glibc"
    trim(0)
    # 64 MiB in 8 KiB blocks (below glibc's mmap threshold, so they come from its heap),
    # every other one freed: free holes that glibc keeps and only a trim hands back.
    blocks = [bytearray(8192) for _ in range(8192)]
    del blocks[::2]
    before = resident_bytes()
    assert before is not None
    returned = trim_once(trim)
    assert returned >= 16 * MIB, returned
    assert len(blocks) == 4096


async def test_a_node_trims_on_its_interval_and_counts_it(start_node: StartNode) -> None:
    node = await start_node(make_config(malloc_trim_interval=1.0))
    assert node.node.memory.active
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while value(await scrape(node), "parley_node_malloc_trims_total") < 2:
        assert loop.time() < deadline
        await asyncio.sleep(0.2)
    assert value(await scrape(node), "parley_node_malloc_trim_returned_bytes_total") >= 0


async def test_interval_zero_starts_no_task_and_close_is_idempotent() -> None:
    trimmer = MemoryTrimmer(0, CollectorRegistry())
    trimmer.start()
    assert not trimmer.active
    await trimmer.close()
    await trimmer.close()
    running = MemoryTrimmer(3600, CollectorRegistry())
    running.start()
    tasks = {t.get_name() for t in asyncio.all_tasks()}
    assert "parley-malloc-trim" in tasks
    await running.close()
    await running.close()
    assert "parley-malloc-trim" not in {t.get_name() for t in asyncio.all_tasks()}


def test_interval_is_configured_by_environment_and_ranged() -> None:
    assert load_config(env={}).malloc_trim_interval == 60.0
    assert load_config(env={"PARLEY_MALLOC_TRIM_INTERVAL": "0"}).malloc_trim_interval == 0
    assert load_config(env={}).malloc_arena_max == 2
    with pytest.raises(ConfigError, match="malloc_arena_max"):
        load_config(env={"PARLEY_MALLOC_ARENA_MAX": "-1"})
    for bad in ("-1", "0.5", "100000"):
        with pytest.raises(ConfigError, match="malloc_trim_interval"):
            load_config(env={"PARLEY_MALLOC_TRIM_INTERVAL": bad})


HEAPS = """
import ctypes, ctypes.util, os, sys, tempfile, threading
from signaling.memory import limit_arenas
limit_arenas(int(sys.argv[1]))
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    keep = [bytearray(4096) for _ in range(64)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fdopen.restype = ctypes.c_void_p
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    out.seek(0)
    print(out.read().decode().count("<heap nr="))
"""


@pytest.mark.parametrize("limit", [0, 2])
def test_arena_limit_caps_the_heaps_threads_create(limit: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", HEAPS, str(limit)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    heaps = int(out.strip())
    if limit:
        assert heaps <= limit, heaps
    else:
        assert heaps > 2, heaps  # eight threads allocating at once get heaps of their own


def test_an_arena_limit_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_arenas(2)
