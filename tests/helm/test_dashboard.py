"""The Grafana dashboard shipped with the chart graphs metrics a node really exports."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NodeHarness
from tests.helm.chart import CHART, only, render


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((CHART / "dashboards" / "parley.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {re.sub(r"_bucket$", "", name) for e in exprs for name in re.findall(r"parley_\w+", e)}


async def test_every_dashboard_metric_is_exported_by_a_node(node: NodeHarness) -> None:
    async with node.http.get(node.url("/metrics")) as resp:
        text = await resp.text()
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported |= {family.name, f"{family.name}_total"}
        exported |= {sample.name for sample in family.samples}
    wanted = dashboard_metrics()
    assert len(wanted) >= 20
    assert wanted <= exported, sorted(wanted - exported)


def test_the_dashboard_configmap_is_picked_up_by_grafanas_sidecar() -> None:
    config_map = only(render(), "ConfigMap", "parley-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "parley.json").read_text())
    assert json.loads(config_map["data"]["parley.json"]) == shipped
    assert {v["name"] for v in shipped["templating"]["list"]} >= {"datasource", "namespace", "pod"}
