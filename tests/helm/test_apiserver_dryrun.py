"""A real kube-apiserver admits every manifest of every variant: server-side dry runs
(``dryRun=All``) with strict field validation, in a namespace that enforces Pod Security
"restricted" (workloads get warnings). Each workload's pod template is also dry-run as a Pod, which
Pod Security refuses outright when it breaks the profile.

The host-bound media modes (``hostPort`` and ``hostNetwork``, never the default) cannot meet
"restricted" (baseline already forbids host ports and host namespaces): for them the test
checks that these are the only findings, so nothing else slips in with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helm.apiserver import ApiServer, running_apiserver
from tests.helm.chart import NAMESPACE, VARIANTS, render
from tests.helm.test_manifests_valid import NO_SCHEMA

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
HOST_FINDINGS = {"host-port": {"hostPort"}, "host-network": {"host namespaces", "hostPort"}}
"""Pod Security findings of each host-bound variant's Pod (exactly these); every other
variant must have none."""


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_apiserver(tmp_path_factory.mktemp("apiserver")) as server:
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": NAMESPACE, "labels": RESTRICTED}}
        assert server.request("POST", "/api/v1/namespaces", namespace).status == 201
        account = {"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default"}}  # no controller manager creates it
        created = server.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
                                 account)
        assert created.status == 201, created.body
        yield server


def pod_security_findings(text: str) -> set[str]:
    """'violates PodSecurity "restricted:latest": hostPort (container "parley" uses hostPort
    7882), host namespaces (hostNetwork=true)' → {"hostPort", "host namespaces"}."""
    _, _, listed = text.replace("\\", "").partition('PodSecurity "restricted:latest": ')
    return {m.strip() for m in re.findall(r"(?:^|\), )([^(),]+?) \(", listed)}


def pod_from(workload: dict[str, Any]) -> dict[str, Any]:
    template = workload["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{workload['metadata']['name']}-0",
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_manifest_is_admitted_strictly(apiserver: ApiServer, name: str) -> None:
    allowed = HOST_FINDINGS.get(name, set())
    findings: set[str] = set()
    for doc in render(*VARIANTS[name]):
        if doc["kind"] in NO_SCHEMA:
            continue
        reply = apiserver.dry_run_create(doc, NAMESPACE)
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        assert reply.status == 201, f"{where}: {reply.body.get('message')}"
        for warning in reply.warnings:
            assert "PodSecurity" in warning, f"{where}: {warning}"
            findings |= pod_security_findings(warning)
        if doc["kind"] in ("StatefulSet", "Deployment"):
            pod = apiserver.dry_run_create(pod_from(doc), NAMESPACE)
            if doc["kind"] == "StatefulSet" and allowed:
                assert pod.status == 403, f"{where}: a host-bound pod was admitted"
                assert pod_security_findings(pod.body["message"]) == allowed, pod.body
            else:
                assert pod.status == 201, f"{where} as a Pod: {pod.body.get('message')}"
                assert not pod.warnings, f"{where} as a Pod: {pod.warnings}"
    # A template's warning names what the Pod would break before the API server defaults its
    # ports (a host-network pod's hostPort appears only on the Pod).
    assert findings <= allowed and bool(findings) == bool(allowed), f"{name}: {findings}"


def test_strict_field_validation_is_on(apiserver: ApiServer) -> None:
    """The dry runs are not vacuous: an unknown field is refused."""
    sts = next(d for d in render() if d["kind"] == "StatefulSet")
    sts["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    reply = apiserver.dry_run_create(sts, NAMESPACE)
    assert reply.status == 400 and "terminationGracePeriod" in reply.body["message"]
