"""Every manifest of every variant is valid, strictly (no unknown field), for several
Kubernetes minor versions: the chart is rendered for each version and checked against that
version's OpenAPI schemas (the ``kubernetes-validate`` package, offline)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.helm.chart import KUBE_VERSIONS, VARIANTS, render

NO_SCHEMA = {"ServiceMonitor"}
"""Custom resources, whose schema belongs to their operator and is not in Kubernetes'."""


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_manifest_is_strictly_valid(name: str, kube_version: str) -> None:
    docs = render(*VARIANTS[name], kube_version=kube_version)
    checked = 0
    for doc in docs:
        if doc["kind"] in NO_SCHEMA:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} for {kube_version}: {exc}")
        checked += 1
    assert checked >= 6  # ConfigMaps, Secret, Services, StatefulSet, PDB at least


def test_the_validator_refuses_an_unknown_field() -> None:
    """The strict check is not vacuous: a typo in a pod spec is caught."""
    docs = render()
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    sts["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSIONS[-1], strict=True)
