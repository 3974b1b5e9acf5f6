"""NOTES.txt, which ``helm install`` prints, tells how to mint a token and open a meeting.

``helm template`` does not print NOTES.txt, so a copy of the chart renders it as a ConfigMap.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.helm.chart import CHART, KUBE_VERSIONS, helm

WRAPPER = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: |
    {{- include "test.notes" . | nindent 4 }}
"""


def notes(tmp_path: Path, *sets: str) -> str:
    chart = tmp_path / "parley"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + text + "\n{{- end -}}\n")
    (chart / "templates" / "notes.yaml").write_text(WRAPPER)
    args = ["template", "parley", str(chart), "-n", "meet", "--kube-version", KUBE_VERSIONS[-1],
            "--show-only", "templates/notes.yaml"]
    for item in sets:
        args += ["--set", item]
    rendered: str = yaml.safe_load(helm(*args).stdout)["data"]["notes"]
    return rendered


def test_notes_mint_a_token_in_the_pod_and_port_forward(tmp_path: Path) -> None:
    text = notes(tmp_path)
    assert "kubectl -n meet exec parley-0 -- \\\n" in text
    assert "parley token --room demo --identity alice" in text
    assert "port-forward svc/parley 8080:80" in text
    assert "http://127.0.0.1:8080/?token=<token>" in text
    assert "No TURN server is configured" in text


def test_notes_point_at_the_ingress_host(tmp_path: Path) -> None:
    text = notes(tmp_path, "ingress.enabled=true", "ingress.tls[0].secretName=t",
                 "ice.turnUrls={turn:turn.example.com}")
    assert "https://meet.example.com/?token=<token>" in text
    assert "port-forward" not in text and "No TURN" not in text


def test_notes_say_whether_the_nodes_form_a_cluster(tmp_path: Path) -> None:
    assert "Scaling out needs Redis" in notes(tmp_path / "one")
    text = notes(tmp_path / "bundled", "redis.bundled.enabled=true", "replicaCount=2")
    assert "Cluster on Redis (bundled, one pod without persistence" in text
    assert "meetings go on for up to 60 s, then move to the other nodes" in text
    assert "Scaling out" not in text
