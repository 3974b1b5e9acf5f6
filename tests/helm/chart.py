"""Render the Helm chart with the real ``helm`` and read the manifests it produces.

``helm`` is looked up on PATH, then in ``~/go/bin`` and ``~/.cache/parley-tools/bin`` (where
``.ci/run`` installs it), or taken from ``PARLEY_HELM``. Without it the chart tests skip
locally and fail in CI (``PARLEY_CI=1``): CI never skips.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "parley"
RELEASE = "parley"
NAMESPACE = "meet"
KUBE_VERSIONS = ("1.25.0", "1.31.0", "1.37.0")
"""Minor versions every variant is rendered for and validated against (oldest supported,
a middle one, newest schemas known)."""

# Each variant turns on one feature over the defaults; tests iterate over all of them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "node-port-cluster": ("replicaCount=2", "redis.url=redis://r:6379/0"),
    "host-port": ("media.mode=hostPort",),
    "load-balancer": ("media.mode=loadBalancer", "replicaCount=2",
                      "media.loadBalancer.addresses={203.0.113.10,203.0.113.11}",
                      "redis.url=redis://r:6379/0"),
    "host-network": ("media.mode=hostNetwork",),
    "bundled-redis": ("redis.bundled.enabled=true", "replicaCount=3"),
    "existing-secret": ("auth.existingSecret=parley-keys", "redis.existingSecret=parley-redis",
                        "replicaCount=2"),
    "ingress": ("ingress.enabled=true", "ingress.className=nginx",
                "ingress.tls[0].secretName=meet-tls", "ingress.tls[0].hosts={meet.example.com}"),
    "hpa": ("autoscaling.enabled=true", "redis.url=redis://r:6379/0",
            "metrics.serviceMonitor.enabled=true"),
    "turn": ("ice.turnUrls={turn:turn.example.com:3478}", "ice.turnSecret=coturn-secret",
             "ice.stunUrls={stun:turn.example.com:3478}",
             "auth.keys.k1=a-secret-of-32-bytes-or-more-000000"),
}


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("PARLEY_CI") == "1":
        pytest.fail(f"{reason}: the chart tests must run in CI (PARLEY_CI=1)")
    pytest.skip(reason)


@functools.cache
def helm_path() -> str | None:
    if os.environ.get("PARLEY_HELM"):
        return os.environ["PARLEY_HELM"]
    found = shutil.which("helm")
    if found:
        return found
    for candidate in (Path.home() / "go" / "bin" / "helm",
                      Path.home() / ".cache" / "parley-tools" / "bin" / "helm"):
        if candidate.exists():
            return str(candidate)
    return None


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    path = helm_path()
    if path is None:
        unavailable("helm is not installed (.ci/run installs it)")
    result = subprocess.run([path, *args], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache",
                                              "HELM_CONFIG_HOME": "/tmp/helm-config",
                                              "HELM_DATA_HOME": "/tmp/helm-data"})
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


@functools.cache
def _render(sets: tuple[str, ...], kube_version: str) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", kube_version]
    for item in sets:
        args += ["--set", item]
    out = helm(*args).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(*sets: str, kube_version: str = KUBE_VERSIONS[-1]) -> list[dict[str, Any]]:
    """The manifests of ``helm template`` with ``--set`` items (rendered once per arguments;
    each call gets its own copy to change)."""
    return copy.deepcopy(list(_render(tuple(sets), kube_version)))


def render_fails(*sets: str) -> str:
    """Render expecting a refusal; returns helm's error output."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSIONS[-1]]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm rendered {sets} although it should refuse"
    return result.stderr


def only(docs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return dict(found[0])


def of_kind(docs: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(d) for d in docs if d["kind"] == kind]


def node_pod(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The node StatefulSet's pod spec."""
    spec: dict[str, Any] = only(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def node_container(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = node_pod(docs)["containers"][0]
    return container


def secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def containers(docs: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (workload name, container) of every workload, init containers included."""
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield doc["metadata"]["name"], c
