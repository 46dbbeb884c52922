"""deploy/: valid Kubernetes objects (kubernetes-validate's bundled schemas, offline) whose ports
and probes point at what the service really serves with config.yml."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from client.bench.local_server import ROOT, serving
from pipeline.config import Limits, load_config
from pipeline.kserve import KServeApp
from tests.service.test_kserve import _cards

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _objects() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _by_kind(kind: str) -> list[dict]:
    return [o for o in _objects() if o["kind"] == kind]


def _container() -> dict:
    [deployment] = _by_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _named_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _container()["ports"]}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schema(path: Path):
    version = kubernetes_validate.latest_version()
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_container_ports_are_the_configured_ports():
    config = load_config(ROOT / "config.yml")
    assert _named_ports() == {
        "rpc": config.rpc_port,
        "http": config.http_port,
        "kserve-http": config.ie.kserve_http_port,
        "metrics": config.ie.metrics_port,
    }
    annotations = _by_kind("Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == config.ie.metrics_port


def test_services_and_autoscaler_target_the_deployment():
    [deployment] = _by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = _named_ports()
    for service in _by_kind("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    [hpa] = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert _container()["resources"]["requests"]["cpu"]  # utilization needs a request


def test_probes_hit_the_health_routes_of_the_kserve_server():
    """The probe paths, asked of a real KServe server with no pipeline behind it yet: live, not ready."""
    container = _container()
    ports = _named_ports()
    with serving(KServeApp(_cards(), "onnx", Limits()).asgi) as port:
        statuses = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert ports[get["port"]] == load_config(ROOT / "config.yml").ie.kserve_http_port
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=5) as r:
                    statuses[probe] = r.status
            except urllib.error.HTTPError as e:
                statuses[probe] = e.code
    assert statuses == {"startupProbe": 200, "livenessProbe": 200, "readinessProbe": 503}
