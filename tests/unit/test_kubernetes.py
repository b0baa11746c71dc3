"""deploy/kubernetes, checked offline: YAML lint, the Kubernetes and KEDA schemas, the overlay's
patches, the Secrets (templates only), and the KEDA triggers against the queues the services declare.

No cluster and no kustomize here: the base is plain manifests listed in its kustomization, each
validated as it is; the overlay's strategic-merge patches are applied to them by :func:`merged`
(the subset of strategic merge the patches use: maps merged, lists of named items merged by
``name``, anything else replaced) and the results validated again.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pathspec
import pytest
import requests
import yaml
from nameko.cli.run import import_service
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from yamllint import linter
from yamllint.config import YamlLintConfig

from services.infra import metrics
from services.infra.topology import SUBSCRIPTIONS
from tests.e2e.support import free_port
from tools import k8s_triggers, launch

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "production"
KEDA_SCHEMAS = ROOT / "tests" / "vendor" / "keda-2.20.2"
# the oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
SERVICES = ("students", "status", "certificates", "notifications")
PRE_STOP = {"mensageria-gateway": 5}  # seconds of preStop sleep before SIGTERM reaches the supervisor


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_resources() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(BASE / name)]


def by_kind(resources: list[dict], kind: str) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def keda_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((KEDA_SCHEMAS / f"{kind.lower()}-keda-v1alpha1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def validate(resource: dict) -> None:
    """Against the vendored KEDA CRD schemas, or strictly (unknown fields refused) against Kubernetes'."""
    if resource["apiVersion"].startswith("keda.sh/"):
        keda_validator(resource["kind"]).validate(resource)
        spec = resource["spec"]
        # the CRD's CEL rule, which a JSON Schema cannot say
        assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), resource["metadata"]["name"]
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def merged(base: object, patch: object) -> object:
    """``patch`` applied to ``base`` as a strategic merge patch (without ``$patch`` directives)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        assert not any(key.startswith("$") for key in patch), "directives are not applied here"
        out = dict(base)
        for key, value in patch.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    if isinstance(patch, list) and isinstance(base, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        out = list(base)
        for item in patch:
            index = next((n for n, b in enumerate(out) if isinstance(b, dict) and b.get("name") == item["name"]), None)
            if index is None:
                out.append(item)
            else:
                out[index] = merged(out[index], item)
        return out
    return copy.deepcopy(patch)


def pod_specs(resources: list[dict]) -> dict[str, dict]:
    return {
        r["metadata"]["name"]: r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("Deployment", "Job")
    }


RESOURCES = base_resources()
CONFIG_MAP = by_kind(RESOURCES, "ConfigMap")["mensageria-config"]["data"]


# --- the files ---------------------------------------------------------------------------------


def test_yaml_lint():
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) > 10
    problems = [
        f"{path.relative_to(ROOT)}:{problem.line}: {problem.message}"
        for path in files
        for problem in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


def test_the_base_kustomization_lists_every_manifest_once():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_every_base_resource_matches_its_schema(resource):
    validate(resource)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ("spec", "template", "spec", "terminationGracePeriod"), 45),  # misspelt
        ("Deployment", ("spec", "replicas"), "two"),
        ("ScaledObject", ("spec", "minReplicas"), 1),  # the HPA's word, not KEDA's
        ("ScaledObject", ("spec", "minReplicaCount"), 11),  # above maxReplicaCount
        ("TriggerAuthentication", ("spec", "secretTargetRef"), [{"parameter": "host", "name": "x"}]),  # no key
    ],
)
def test_the_schemas_refuse_a_broken_resource(kind, path, value):
    """The validation above can fail: the same resources, broken in one place, are refused."""
    resource = copy.deepcopy(next(r for r in RESOURCES if r["kind"] == kind))
    node = resource
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        validate(resource)


# --- the overlay -------------------------------------------------------------------------------


def overlay() -> dict:
    return yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())


@pytest.mark.parametrize("patch_path", [p["path"] for p in overlay()["patches"]])
def test_each_overlay_patch_targets_a_base_resource_and_keeps_it_valid(patch_path):
    (patch,) = documents(OVERLAY / patch_path)
    target = by_kind(RESOURCES, patch["kind"]).get(patch["metadata"]["name"])
    assert target is not None, f"{patch_path}: no {patch['kind']} {patch['metadata']['name']} in the base"
    assert patch["apiVersion"] == target["apiVersion"]
    for container in patch.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        names = [c["name"] for c in target["spec"]["template"]["spec"]["containers"]]
        assert container["name"] in names, f"{patch_path}: no container {container['name']} to patch"
    for key in patch.get("data", {}):
        assert key in target["data"], f"{patch_path}: {key} is not in the base ConfigMap"
    validate(merged(target, patch))


def test_the_overlay_builds_on_the_base_and_sets_the_image_every_pod_runs():
    kustomization = overlay()
    assert "../../base" in kustomization["resources"]
    for name in kustomization["resources"]:
        if name.endswith(".yaml"):
            for resource in documents(OVERLAY / name):
                validate(resource)
    images = {c["image"] for spec in pod_specs(RESOURCES).values() for c in spec["containers"]}
    assert images == {image["name"] for image in kustomization["images"]}


# --- secrets: made from git-ignored files, each with a committed template without values --------


def secret_references(resources: list[dict]) -> dict[str, set[str]]:
    """Every Secret the base refers to, and the keys it reads from each (``*``: all of them)."""
    found: dict[str, set[str]] = {}
    for spec in pod_specs(resources).values():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    found.setdefault(source["secretRef"]["name"], set()).add("*")
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.setdefault(ref["name"], set()).add(ref["key"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                found.setdefault(volume["secret"]["secretName"], set()).add("*")
    for auth in by_kind(resources, "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            found.setdefault(ref["name"], set()).add(ref["key"])
    return found


def git_ignored() -> pathspec.PathSpec:
    return pathspec.PathSpec.from_lines("gitignore", (DEPLOY / ".gitignore").read_text().splitlines())


def template_keys(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_every_secret_is_generated_from_git_ignored_files_with_empty_templates():
    references = secret_references(RESOURCES)
    generators = {g["name"]: g for g in overlay()["secretGenerator"]}
    assert set(generators) == set(references)
    ignored = git_ignored()
    for name, generator in generators.items():
        sources = [s for s in generator.get("envs", [])] + [f.split("=", 1)[-1] for f in generator.get("files", [])]
        for source in sources:
            relative = (OVERLAY / source).relative_to(DEPLOY).as_posix()
            assert ignored.match_file(relative), f"{relative} would be committed"
            template = OVERLAY / f"{source}.example"
            assert template.exists() and not ignored.match_file(f"{relative}.example"), f"no template {template}"
            if source in generator.get("envs", []):
                keys = template_keys(template)
                assert {k: v for k, v in keys.items() if v} == {}, f"{template} holds values"
                assert references[name] - {"*"} <= set(keys), f"{template} lacks keys the manifests read"


def test_no_secret_value_is_in_the_manifests():
    """What is committed, that is: the secret files an operator fills in here are git-ignored."""
    ignored = git_ignored()
    for path in DEPLOY.rglob("*"):
        committed = path.is_file() and not ignored.match_file(path.relative_to(DEPLOY).as_posix())
        if committed and not path.name.endswith(".example"):  # templates: checked above
            text = path.read_text()
            assert not re.search(r"(amqp|postgresql\+psycopg2|http)://[^:/\s]+:[^@\s]+@", text), path
            assert "PRIVATE KEY" not in text, path
    for resource in RESOURCES:
        assert resource["kind"] != "Secret"


# --- the pods ----------------------------------------------------------------------------------


def test_every_variable_the_pods_get_is_one_mensageria_reads():
    """A misspelt name would silently leave config.yaml's default in place."""
    read = set(re.findall(r"\$\{(\w+)", (ROOT / "config.yaml").read_text())) | {"OTEL_EXPORTER_OTLP_ENDPOINT"}
    given = set(CONFIG_MAP)
    for spec in pod_specs(RESOURCES).values():
        for container in spec["containers"]:
            given |= {variable["name"] for variable in container.get("env", [])}
    for generator in overlay()["secretGenerator"]:
        for source in generator.get("envs", []):
            if generator["name"] != k8s_triggers.MANAGEMENT_SECRET:  # KEDA's, not the pods'
                given |= set(template_keys(OVERLAY / f"{source}.example"))
    assert given - read == set()


@pytest.mark.parametrize("name", sorted(pod_specs(RESOURCES)))
def test_every_pod_is_restricted_and_sized(name):
    spec = pod_specs(RESOURCES)[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("name", [f"mensageria-{s}" for s in ("gateway", *SERVICES)])
def test_the_grace_period_outlasts_the_supervisors_own(name):
    spec = pod_specs(RESOURCES)[name]
    assert spec["terminationGracePeriodSeconds"] > PRE_STOP.get(name, 0) + launch.STOP_GRACE + 5
    (container,) = spec["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    assert pre_stop == (["sleep", str(PRE_STOP[name])] if name in PRE_STOP else None)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_is_probed_on_its_own_metrics_port(service):
    (service_cls,) = import_service(f"services.{service}")
    assert [name for name, _ in inspect.getmembers(service_cls, lambda m: isinstance(m, metrics.Metrics))]
    (container,) = pod_specs(RESOURCES)[f"mensageria-{service}"]["containers"]
    assert container["command"][-1] == f"services.{service}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["metrics"]) == CONFIG_MAP[f"METRICS_PORT_{service.upper()}"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/favicon.ico", "port": "metrics"}


def test_the_gateway_is_probed_on_health_and_ready_and_served_by_its_service():
    (container,) = pod_specs(RESOURCES)["mensageria-gateway"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert CONFIG_MAP["GATEWAY_ADDRESS"].endswith(f":{ports['http']}")
    assert str(ports["metrics"]) == CONFIG_MAP["METRICS_PORT_GATEWAY"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = by_kind(RESOURCES, "Service")["mensageria-gateway"]
    deployment = by_kind(RESOURCES, "Deployment")["mensageria-gateway"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = by_kind(RESOURCES, "HorizontalPodAutoscaler")["mensageria-gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mensageria-gateway"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    budget = by_kind(RESOURCES, "PodDisruptionBudget")["mensageria-gateway"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_probe_path_is_answered_without_a_scrape():
    """What the services' probes ask for costs no database or broker read; a scrape does."""
    scrapes = []

    class Gauges:
        def collect(self):
            scrapes.append(1)
            return [GaugeMetricFamily("probe_test_gauge", "read at scrape time", value=1)]

    registry = CollectorRegistry()
    registry.register(Gauges())
    endpoint = metrics.MetricsEndpoint(free_port(), registry)
    assert endpoint.start()
    try:
        probe = requests.get(f"http://127.0.0.1:{endpoint.port}/favicon.ico", timeout=5)
        assert (probe.status_code, probe.content, scrapes) == (200, b"", [])
        scrape = requests.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)
        assert "probe_test_gauge 1.0" in scrape.text and scrapes == [1]
    finally:
        endpoint.stop()


# --- KEDA: a trigger for every queue a service consumes, and for nothing else ------------------


@pytest.fixture(scope="module")
def declared():
    with k8s_triggers.pod_config() as config:
        yield config, k8s_triggers.all_service_queues(config)


def test_the_committed_keda_file_is_what_the_code_generates(declared):
    config, queues = declared
    assert k8s_triggers.KEDA_FILE.read_text() == k8s_triggers.render(config, queues), (
        "run python -m tools.k8s_triggers --write"
    )


def test_the_inspected_queues_are_the_topologys(declared):
    """Two sources agree: the entrypoints nameko would run, and the subscriptions the publishers declare."""
    _, queues = declared
    consumed = {q for service in queues for q in service.consumed}
    assert consumed == {s.queue_name for s in SUBSCRIPTIONS} | {f"rpc-{s}" for s in SERVICES}
    assert sorted(q.service for q in queues) == sorted(["gateway", *SERVICES])
    unconsumed = {q for service in queues for q in service.unconsumed}
    assert {f"{s}.dead-letters" for s in SERVICES} <= unconsumed
    assert all(re.fullmatch(r"evt-.+\.retry\.\d+ms", q) for q in unconsumed - {f"{s}.dead-letters" for s in SERVICES})


def test_every_consumed_queue_has_a_trigger_and_every_trigger_a_consumer(declared):
    config, queues = declared
    keda = documents(k8s_triggers.KEDA_FILE)
    assert k8s_triggers.trigger_gaps(queues, keda) == []
    scaled = by_kind(keda, "ScaledObject")
    deployments = by_kind(RESOURCES, "Deployment")
    (auth,) = by_kind(keda, "TriggerAuthentication")
    assert sorted(scaled) == sorted(f"mensageria-{s}" for s in SERVICES)
    for service in (q for q in queues if q.consumed):
        spec = scaled[service.deployment]["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert "replicas" not in deployments[service.deployment]["spec"]  # the ScaledObject's HPA owns it
        assert spec["minReplicaCount"] == 1 and service.has_rpc
        assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        for trigger in spec["triggers"]:
            assert trigger["authenticationRef"] == {"name": auth}
            assert {k: v for k, v in trigger["metadata"].items() if k != "queueName"} == {
                "protocol": "http",
                "mode": "QueueLength",
                "value": str(config["max_workers"]),
            }
    assert CONFIG_MAP["MAX_WORKERS"] == str(config["max_workers"])


def test_a_missing_or_stray_trigger_is_reported(declared):
    _, queues = declared
    keda = copy.deepcopy(documents(k8s_triggers.KEDA_FILE))
    status = next(d for d in keda if d["metadata"]["name"] == "mensageria-status")
    dropped = status["spec"]["triggers"].pop()["metadata"]["queueName"]
    (status_queues,) = (q for q in queues if q.service == "status")
    retry = next(q for q in status_queues.unconsumed if ".retry." in q)
    for stray in (retry, "rpc-nobody"):  # declared but consumed by nobody; declared by nobody
        status["spec"]["triggers"].append({"type": "rabbitmq", "metadata": {"queueName": stray}})
    assert k8s_triggers.trigger_gaps(queues, keda) == [
        f"status: {dropped} is consumed but has no trigger",
        f"status: a trigger names {retry}, which status does not consume",
        "status: a trigger names rpc-nobody, which status does not consume",
    ]


def test_the_gateway_consumes_no_queue_and_scales_by_cpu(declared):
    _, queues = declared
    (gateway,) = (q for q in queues if q.service == "gateway")
    assert (gateway.deployment, gateway.consumed) == ("mensageria-gateway", ())
    assert "mensageria-gateway" not in by_kind(documents(k8s_triggers.KEDA_FILE), "ScaledObject")
    assert "mensageria-gateway" in by_kind(RESOURCES, "HorizontalPodAutoscaler")
