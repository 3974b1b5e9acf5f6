"""What the rendered chart must hold, read from ``helm template`` output."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import yaml

from conference.cluster.config import ClusterConfig, RedisConfig
from tests.helm.chart import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    VARIANTS,
    containers,
    helm,
    node_container,
    node_pod,
    of_kind,
    only,
    render,
    render_fails,
    secret_data,
)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(only(docs, "ConfigMap", "parley")["data"]["config.yaml"])
    return data


def test_lint_strict_passes_for_every_variant() -> None:
    for name, sets in VARIANTS.items():
        args = ["lint", "--strict", "--kube-version", KUBE_VERSIONS[-1], str(CHART)]
        for item in sets:
            args += ["--set", item]
        result = helm(*args, check=False)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_default_runs_one_node_with_media_on_its_own_node_port() -> None:
    docs = render()
    pod = node_pod(docs)
    assert not pod.get("hostNetwork", False)
    assert only(docs, "StatefulSet")["spec"]["replicas"] == 1
    assert all("hostPort" not in p for p in node_container(docs)["ports"])
    media = only(docs, "Service", "parley-0-media")["spec"]
    assert (media["type"], media["ports"][0]["protocol"], media["ports"][0]["nodePort"]) == (
        "NodePort", "UDP", 30782)
    announced = env_of(node_container(docs))["PARLEY_SFU_ANNOUNCED_ADDRESS"]
    assert announced["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_host_port_mode_publishes_the_udp_port_on_the_kubernetes_node() -> None:
    docs = render(*VARIANTS["host-port"])
    container = node_container(docs)
    media = next(p for p in container["ports"] if p["name"] == "media")
    assert (media["protocol"], media["containerPort"], media["hostPort"]) == ("UDP", 7882, 7882)
    announced = env_of(container)["PARLEY_SFU_ANNOUNCED_ADDRESS"]
    assert announced["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert config_of(docs)["sfu"]["udp_port"] == 7882
    assert container["command"] == ["parley", "serve", "--config", "/etc/parley/config.yaml"]
    assert not [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-media")]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_probes_use_livez_for_liveness_and_readyz_for_readiness(name: str) -> None:
    container = node_container(render(*VARIANTS[name]))
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_grace_period_outlasts_prestop_drain_timeout_and_shutdown_grace(name: str) -> None:
    docs = render(*VARIANTS[name])
    pod = node_pod(docs)
    sleep = int(node_container(docs)["lifecycle"]["preStop"]["exec"]["command"][1])
    shutdown_grace = config_of(docs)["shutdown_grace"]
    drain_timeout = 60  # cluster.drain_timeout's default, counted whether or not Redis is on
    assert pod["terminationGracePeriodSeconds"] > sleep + drain_timeout + shutdown_grace


def test_a_grace_period_too_short_is_refused() -> None:
    assert "must exceed" in render_fails("termination.gracePeriodSeconds=60")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_container_runs_restricted(name: str) -> None:
    docs = render(*VARIANTS[name])
    for workload in of_kind(docs, "StatefulSet") + of_kind(docs, "Deployment"):
        pod_ctx = workload["spec"]["template"]["spec"]["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] > 0
        assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
    for workload, container in containers(docs):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, workload
        assert ctx["readOnlyRootFilesystem"] is True, workload
        assert ctx["capabilities"]["drop"] == ["ALL"], workload
        assert "add" not in ctx["capabilities"], workload
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", workload


def test_the_read_only_node_gets_a_writable_tmp() -> None:
    docs = render()
    mounts = {m["mountPath"]: m for m in node_container(docs)["volumeMounts"]}
    assert mounts["/etc/parley"]["readOnly"] is True
    tmp = next(v for v in node_pod(docs)["volumes"] if v["name"] == mounts["/tmp"]["name"])
    assert "emptyDir" in tmp


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_secrets_are_referenced_never_inlined(name: str) -> None:
    docs = render(*VARIANTS[name])
    container = node_container(docs)
    for var in container.get("env", []):
        if var["name"] in ("PARLEY_KEYS", "PARLEY_REDIS_URL", "PARLEY_ICE_TURN_SECRET",
                           "PARLEY_ICE_TURN_PASSWORD"):
            assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
    config_text = only(docs, "ConfigMap", "parley")["data"]["config.yaml"]
    assert "keys" not in yaml.safe_load(config_text).get("auth", {})
    assert "turn_secret" not in config_text and "coturn-secret" not in config_text
    refs = [e["secretRef"]["name"] for e in container["envFrom"]]
    if "auth.existingSecret=parley-keys" in VARIANTS[name]:
        assert refs == ["parley-keys"] and not of_kind(docs, "Secret")
    else:
        assert refs == ["parley"] and only(docs, "Secret", "parley")


def test_keys_and_turn_secret_land_in_the_secret_in_the_node_format() -> None:
    data = secret_data(only(render(*VARIANTS["turn"]), "Secret", "parley"))
    assert data["PARLEY_KEYS"] == "k1:a-secret-of-32-bytes-or-more-000000"
    assert data["PARLEY_ICE_TURN_SECRET"] == "coturn-secret"


def test_a_key_is_generated_when_none_is_given() -> None:
    key, _, secret = secret_data(only(render(), "Secret", "parley"))["PARLEY_KEYS"].partition(":")
    assert key == "default" and len(secret) >= 32


def test_config_changes_restart_the_nodes() -> None:
    def checksum(*sets: str) -> str:
        annotations = only(render(*sets), "StatefulSet")["spec"]["template"]["metadata"]
        value: str = annotations["annotations"]["checksum/config"]
        return value

    assert checksum() == checksum()
    assert checksum() != checksum("config.rooms.max_participants=20")


@pytest.mark.parametrize("name", ["host-port", "host-network"])
def test_host_bound_modes_keep_one_node_per_kubernetes_node(name: str) -> None:
    docs = render(*VARIANTS[name])
    anti = node_pod(docs)["affinity"]["podAntiAffinity"]
    terms = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    labels = only(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert terms[0]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_host_network_is_only_an_option_and_gathers_on_the_host_address() -> None:
    for name in set(VARIANTS) - {"host-network"}:
        assert not node_pod(render(*VARIANTS[name])).get("hostNetwork", False), name
    docs = render(*VARIANTS["host-network"])
    assert node_pod(docs)["hostNetwork"] is True
    assert node_pod(docs)["dnsPolicy"] == "ClusterFirstWithHostNet"
    ice = env_of(node_container(docs))["PARLEY_SFU_ICE_ADDRESSES"]
    assert ice["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_node_port_mode_gives_each_pod_its_own_service_and_port() -> None:
    docs = render(*VARIANTS["node-port-cluster"])
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")
                if s["spec"].get("type") == "NodePort"}
    assert sorted(services) == ["parley-0-media", "parley-1-media"]
    for ordinal in (0, 1):
        spec = services[f"parley-{ordinal}-media"]["spec"]
        assert spec["selector"]["statefulset.kubernetes.io/pod-name"] == f"parley-{ordinal}"
        assert spec["externalTrafficPolicy"] == "Local"
        (port,) = spec["ports"]
        assert port["protocol"] == "UDP"
        assert port["nodePort"] == port["targetPort"] == 30782 + ordinal
    container = node_container(docs)
    assert all("hostPort" not in p for p in container["ports"])
    assert container["command"] == ["/bin/sh", "/etc/parley/media-entry.sh"]
    assert not node_pod(docs)["affinity"]["podAntiAffinity"].get(
        "requiredDuringSchedulingIgnoredDuringExecution")


def test_load_balancer_mode_needs_an_address_per_pod() -> None:
    docs = render(*VARIANTS["load-balancer"])
    lbs = [s for s in of_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]
    assert [s["metadata"]["name"] for s in lbs] == ["parley-0-media", "parley-1-media"]
    assert all(s["spec"]["ports"][0]["protocol"] == "UDP" for s in lbs)
    error = render_fails("media.mode=loadBalancer", "replicaCount=3", "redis.url=redis://r:6379",
                         "media.loadBalancer.addresses={203.0.113.10,203.0.113.11}")
    assert "one address per pod" in error


def test_per_pod_services_cover_the_autoscaler_maximum() -> None:
    docs = render("media.mode=nodePort", "autoscaling.enabled=true",
                  "autoscaling.maxReplicas=4", "redis.url=redis://r:6379")
    assert len([s for s in of_kind(docs, "Service") if s["spec"].get("type") == "NodePort"]) == 4


def test_several_nodes_without_redis_are_refused() -> None:
    assert "needs Redis" in render_fails("replicaCount=2")
    assert "needs Redis" in render_fails("autoscaling.enabled=true")


def test_default_config_sets_no_cluster_or_redis_section() -> None:
    config = config_of(render())
    assert "redis" not in config and "cluster" not in config


def test_redis_variants_set_the_cluster_section_and_the_url() -> None:
    bundled = render(*VARIANTS["bundled-redis"])
    config = config_of(bundled)
    assert config["cluster"] == {"drain_timeout": 60}
    assert config["redis"] == {"url": "redis://parley-redis:6379/0"}
    redis = only(bundled, "Deployment", "parley-redis")
    assert redis["spec"]["replicas"] == 1
    assert only(bundled, "Service", "parley-redis")["spec"]["ports"][0]["port"] == 6379

    external = render(*VARIANTS["hpa"])
    assert "redis" not in config_of(external)  # the URL may hold a password: Secret only
    assert secret_data(only(external, "Secret"))["PARLEY_REDIS_URL"] == "redis://r:6379/0"

    existing = env_of(node_container(render(*VARIANTS["existing-secret"])))["PARLEY_REDIS_URL"]
    assert existing["valueFrom"]["secretKeyRef"] == {"name": "parley-redis", "key": "redis-url"}


def test_ingress_keeps_websockets_open_and_lifts_per_ip_caps() -> None:
    docs = render(*VARIANTS["ingress"])
    ingress = only(docs, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "parley", "port": {"name": "http"}}
    signaling = config_of(docs)["signaling"]
    assert signaling["max_connections_per_ip"] == 0 and signaling["join_rate_per_ip"] == 0
    kept = config_of(render(*VARIANTS["ingress"], "config.signaling.join_rate_per_ip=50"))
    assert kept["signaling"]["join_rate_per_ip"] == 50


def test_hpa_scales_the_statefulset_in_one_node_at_a_time() -> None:
    docs = render(*VARIANTS["hpa"])
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                             "name": "parley"}
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"][0]["value"] == 1
    assert "replicas" not in only(docs, "StatefulSet")["spec"]  # the HPA owns it


def test_pdb_lets_one_node_drain_at_a_time() -> None:
    pdb = only(render(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "node"


def test_service_monitor_scrapes_every_node_through_the_headless_service() -> None:
    docs = render(*VARIANTS["hpa"])
    monitor = only(docs, "ServiceMonitor")
    headless = only(docs, "Service", "parley-nodes")
    assert headless["spec"]["clusterIP"] == "None"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= headless["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics",
                                               "interval": "30s"}


def test_values_schema_refuses_settings_the_chart_owns() -> None:
    # (helm names the wrong path for propertyNames failures; the property name is right)
    assert "invalid propertyName 'port'" in render_fails("config.port=9000")
    assert "invalid propertyName 'keys'" in render_fails("config.auth.keys.k=s")
    assert "invalid propertyName 'udp_port'" in render_fails("config.sfu.udp_port=7000")
    assert "/media/mode" in render_fails("media.mode=hostNetworking")


def test_schema_lets_through_exactly_the_node_cluster_settings_the_chart_does_not_own() -> None:
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    tuning = config["properties"]
    node = {"cluster": {f.name for f in dataclasses.fields(ClusterConfig)} - {"drain_timeout"},
            "redis": {f.name for f in dataclasses.fields(RedisConfig)} - {"url"}}
    assert {name: set(tuning[name]["properties"]) for name in node} == node
    assert all(tuning[name]["additionalProperties"] is False for name in node)
    assert "/config/cluster" in render_fails("redis.url=redis://r:6379/0",
                                             "config.cluster.drain_timeout=5")
    assert "/config/redis" in render_fails("redis.url=redis://r:6379/0", "config.redis.url=x")


def test_cluster_tuning_without_redis_is_refused_and_merges_with_it() -> None:
    assert "tune a cluster" in render_fails("config.cluster.node_ttl=10")
    config = config_of(render(*VARIANTS["bundled-redis"], "config.cluster.node_ttl=10",
                              "config.redis.timeout=2"))
    assert config["cluster"] == {"drain_timeout": 60, "node_ttl": 10}
    assert config["redis"] == {"url": "redis://parley-redis:6379/0", "timeout": 2}


def test_hpa_scales_in_one_node_per_grace_period_within_the_api_limit() -> None:
    policy = only(render(*VARIANTS["hpa"]), "HorizontalPodAutoscaler")["spec"]["behavior"][
        "scaleDown"]["policies"][0]
    assert policy["periodSeconds"] == 100  # 5 + 60 + 20 + 15
    long = only(render(*VARIANTS["hpa"], "cluster.drainTimeout=3600"), "HorizontalPodAutoscaler")
    assert long["spec"]["behavior"]["scaleDown"]["policies"][0]["periodSeconds"] == 1800


def test_everything_lands_in_the_release_namespace_or_is_namespaced_by_helm() -> None:
    for doc in render(*VARIANTS["bundled-redis"]):
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
