"""The per-pod start script of the nodePort and loadBalancer modes picks each pod's port or
address by its ordinal; run with /bin/sh and a stand-in ``parley`` that prints what it got."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.helm.chart import REPO, VARIANTS, node_container, node_pod, only, render

STAND_IN = """#!/bin/sh
echo "args=$*"
echo "port=${PARLEY_SFU_UDP_PORT:-}"
echo "address=${PARLEY_SFU_ANNOUNCED_ADDRESS:-}"
"""


def run_entry(tmp_path: Path, variant: str, pod: str,
              announced: str = "") -> subprocess.CompletedProcess[str]:
    script = only(render(*VARIANTS[variant]), "ConfigMap", "parley")["data"]["media-entry.sh"]
    (tmp_path / "media-entry.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "parley").write_text(STAND_IN)
    (bin_dir / "parley").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POD_NAME": pod}
    if announced:
        env["PARLEY_SFU_ANNOUNCED_ADDRESS"] = announced
    return subprocess.run(["/bin/sh", str(tmp_path / "media-entry.sh")], env=env,
                          capture_output=True, text=True, timeout=10, check=False)


def test_node_port_pods_use_base_plus_ordinal(tmp_path: Path) -> None:
    for pod, port in (("parley-0", 30782), ("parley-1", 30783)):
        result = run_entry(tmp_path, "node-port-cluster", pod, announced="10.1.2.3")
        assert result.returncode == 0, result.stderr
        assert f"port={port}" in result.stdout
        assert "address=10.1.2.3" in result.stdout  # status.hostIP, from the pod spec
        assert "args=serve --config /etc/parley/config.yaml" in result.stdout


def test_load_balancer_pods_announce_their_own_address(tmp_path: Path) -> None:
    for pod, address in (("parley-0", "203.0.113.10"), ("parley-1", "203.0.113.11")):
        result = run_entry(tmp_path, "load-balancer", pod)
        assert result.returncode == 0, result.stderr
        assert f"address={address}" in result.stdout


def test_a_pod_without_an_address_does_not_start(tmp_path: Path) -> None:
    result = run_entry(tmp_path, "load-balancer", "parley-5")
    assert result.returncode != 0 and "parley-5" in result.stderr
    assert "args=" not in result.stdout


def test_the_image_runs_as_the_user_the_chart_declares() -> None:
    """The Containerfile's numeric USER is the chart's runAsUser, and its default command
    reads the config where the chart mounts it."""
    containerfile = (REPO / "Containerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", containerfile, re.MULTILINE)
    assert user is not None
    pod = node_pod(render())
    ctx = pod["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert "/etc/parley/config.yaml" in containerfile
    mounts = {m["mountPath"] for m in node_container(render())["volumeMounts"]}
    assert "/etc/parley" in mounts
