"""A real kube-apiserver on loopback, over Debian's etcd, for server-side dry runs.

The binary is built once by ``.ci/build-kube-apiserver`` (``PARLEY_KUBE_APISERVER`` names it;
otherwise the tools cache is searched). Without it, or without etcd, the dry-run tests skip
locally and fail in CI. Nothing runs but the API server: no controller manager, no kubelet,
so objects are only admitted (``dryRun=All``), never acted upon.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helm.chart import unavailable

START_TIMEOUT = 90.0

# Collection paths of the kinds the chart renders.
COLLECTIONS = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
    ("apps/v1", "StatefulSet"): "/apis/apps/v1/namespaces/{ns}/statefulsets",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("policy/v1", "PodDisruptionBudget"): "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"):
        "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    ("networking.k8s.io/v1", "Ingress"): "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses",
}


def apiserver_binary() -> str | None:
    if os.environ.get("PARLEY_KUBE_APISERVER"):
        return os.environ["PARLEY_KUBE_APISERVER"]
    tools = Path(os.environ.get("PARLEY_TOOLS", Path.home() / ".cache" / "parley-tools"))
    found = sorted((tools / "bin").glob("kube-apiserver-*"))
    return str(found[-1]) if found and not found[-1].name.endswith(".partial") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    warnings: list[str]


@dataclass
class ApiServer:
    url: str
    token: str
    context: ssl.SSLContext

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
                return Reply(resp.status, _body(resp.read()), resp.headers.get_all("Warning") or [])
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, _body(exc.read()), exc.headers.get_all("Warning") or [])

    def dry_run_create(self, obj: Mapping[str, Any], namespace: str) -> Reply:
        path = COLLECTIONS[(obj["apiVersion"], obj["kind"])].format(ns=namespace)
        return self.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)


def _body(raw: bytes) -> dict[str, Any]:
    """A JSON object, or plain text (health endpoints) as its ``message``."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw.decode(errors="replace")}
    return body if isinstance(body, dict) else {"message": body}


def _write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "sa.key", directory / "sa.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: ApiServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kube-apiserver exited with {proc.returncode}:\n"
                        f"{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/readyz").status == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"kube-apiserver not ready within {START_TIMEOUT}s:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def running_apiserver(workdir: Path) -> Iterator[ApiServer]:
    binary, etcd = apiserver_binary(), shutil.which("etcd")
    if binary is None or not Path(binary).exists():
        unavailable("kube-apiserver is not built (.ci/build-kube-apiserver)")
    if etcd is None:
        unavailable("etcd is not installed (apt-get install etcd-server)")
    etcd_port, etcd_peer, port = free_port(), free_port(), free_port()
    etcd_argv = [etcd, "--data-dir", str(workdir / "etcd"), "--name", "parley-test",
                 "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                 "--initial-cluster", f"parley-test=http://127.0.0.1:{etcd_peer}"]
    token = secrets.token_urlsafe(24)
    (workdir / "tokens.csv").write_text(f'{token},parley-test,1,"system:masters"\n')
    private, public = _write_service_account_keys(workdir)
    certs = workdir / "certs"
    api_argv = [binary, f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1", f"--secure-port={port}",
                "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
                f"--cert-dir={certs}", f"--token-auth-file={workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={public}",
                f"--service-account-signing-key-file={private}",
                "--service-cluster-ip-range=10.96.0.0/16"]
    with _process(etcd_argv, workdir / "etcd.log"), \
            _process(api_argv, workdir / "apiserver.log") as api:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its own self-signed certificate, on loopback
        server = ApiServer(f"https://127.0.0.1:{port}", token, context)
        _wait_ready(server, api, workdir / "apiserver.log")
        yield server
