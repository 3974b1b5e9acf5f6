"""The peers suite end to end at a tiny size: Janus and Parley in a private namespace.

Skipped where Janus or unprivileged network namespaces are missing (a failure in CI). Nothing
leaves the namespace the suite creates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import netns
from bench.janus import janus_binary, write_config
from bench.peers_bench import (
    BASE_PARLEY_CONFIG,
    NODE_LATENCY,
    histogram_share,
    merge,
    yield_to_server,
)
from bench.peers_report import rows
from bench.procs import REPO


def test_parley_config_passes_through_merged_section_by_section() -> None:
    merged = merge(BASE_PARLEY_CONFIG, {"sfu": {"udp_port": 40000}, "log_level": "info"})
    assert merged["sfu"] == {"ice_addresses": BASE_PARLEY_CONFIG["sfu"]["ice_addresses"],
                             "udp_port": 40000}
    assert merged["log_level"] == "info" and merged["rooms"] == BASE_PARLEY_CONFIG["rooms"]


def test_the_share_within_a_bound_counts_only_the_window() -> None:
    def scrape(within: float, total: float) -> dict[str, float]:
        return {f'{NODE_LATENCY}_bucket{{le="0.015"}}': within, f"{NODE_LATENCY}_count": total}

    assert histogram_share(scrape(50, 100), scrape(149, 200), NODE_LATENCY, 0.015) == 0.99
    assert histogram_share(scrape(50, 100), scrape(50, 100), NODE_LATENCY, 0.015) is None
    assert histogram_share({}, {}, NODE_LATENCY, 0.015) is None


def test_the_load_generator_yields_to_the_server_and_the_server_keeps_its_policy() -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    load = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert yield_to_server(server.pid) >= 1
        assert os.sched_getscheduler(load.pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(server.pid) == os.SCHED_OTHER
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the suite's own process too
    finally:
        for child in (server, load):
            child.kill()
            child.wait()


def test_janus_config_loads_only_videoroom_and_http_on_loopback(tmp_path: Path) -> None:
    folder = tmp_path
    write_config(folder, port=18088, interface="veth0")
    core = (folder / "janus.jcfg").read_text()
    http = (folder / "janus.transport.http.jcfg").read_text()
    assert 'ip = "127.0.0.1"' in http and "admin_http = false" in http
    assert 'ice_enforce_list = "veth0"' in core
    if janus_binary() is not None:
        assert "libjanus_videoroom.so" not in core and "libjanus_echotest.so" in core
        assert "libjanus_http.so" not in core and "libjanus_websockets.so" in core


def _unavailable(reason: str) -> None:
    if os.environ.get("PARLEY_CI") == "1":
        pytest.fail(f"{reason}: the peers suite must run in CI (PARLEY_CI=1)")
    pytest.skip(reason)


@pytest.mark.timeout(240)
def test_janus_and_parley_both_deliver_every_frame_to_light_subscribers() -> None:
    if janus_binary() is None:
        _unavailable("janus is not installed")
    if not netns.available():
        _unavailable("no unprivileged network namespaces here")
    done = subprocess.run([sys.executable, "-m", "bench.peers_bench", "--smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=220, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    runs = {r["server"]: r for r in figures["runs"]}
    for server in ("janus", "parley-python", "parley"):
        run = runs[server]
        assert "failed" not in run, run
        assert run["streams_receiving"] == run["streams"] == 3, run
        assert run["delivered_min"] > 0.9 and run["latency_samples"] > 30, run
        assert run["received_packets_per_frame"] == pytest.approx(
            run["sent_packets_per_frame"], rel=0.2), run
        assert 0 < run["server_cpu_per_packet_s"] < 0.01, run
        assert run["load_batch_threads"] >= 1, run  # the one worker process
    figures_named = [row.figure for row in rows(figures)]
    assert any("Parley ÷ Janus" in f for f in figures_named)
    assert any("compiled ÷ Python" in f for f in figures_named)
