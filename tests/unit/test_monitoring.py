"""The monitoring files, parsed: the Grafana dashboard (one board, every query on a metric mensageria
declares), its provisioning, the Prometheus scrape config (every process, on its configured port) and
docker compose's ``monitoring`` profile. ``tests/e2e/test_metrics.py`` checks the same names against
a running system's ``/metrics``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from services.infra import metrics
from services.infra.settings import Settings
from tests.unit.test_layout import filled_env, interpolate

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "mensageria.json"
PROCESSES = ("gateway", "students", "status", "certificates", "notifications")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")
METRIC = re.compile(r"\b((?:mensageria|process)_[a-z0-9_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries read (as Prometheus sees it: ``_bucket``, ``_total``...)."""
    return {name for panel in panels() for target in panel["targets"] for name in METRIC.findall(target["expr"])}


def family_of(name: str) -> str:
    """The family a series name belongs to: ``x_bucket`` → ``x``, ``x_total`` → ``x``."""
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in metrics.DECLARED:
            return name[: -len(suffix)]
    return name


def scrape_targets() -> dict[str, list[str]]:
    """``{job: ["host:port", ...]}`` of monitoring/prometheus.yml."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    return {
        job["job_name"]: [f"{name}:{sd['port']}" for sd in job["dns_sd_configs"] for name in sd["names"]]
        for job in config["scrape_configs"]
    }


def compose() -> dict:
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), filled_env()))


def test_one_board_with_every_section():
    board = dashboard()
    assert board["uid"] == "mensageria" and board["title"] == "mensageria"
    rows = [panel["title"].lower() for panel in board["panels"] if panel["type"] == "row"]
    for section in ("throughput", "latency", "backlog", "outbox lag", "dead letters", "mail"):
        assert any(section in row for row in rows), section
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_every_metric_the_dashboard_reads_is_declared():
    names = dashboard_metrics()
    assert len(names) >= 20
    unknown = sorted(n for n in names if not n.startswith("process_") and family_of(n) not in metrics.DECLARED)
    assert unknown == []
    histograms = {name for name in metrics.DECLARED if "duration" in name or name.endswith("batch_size")}
    for name in names:  # a histogram is read through its series, never by its bare name
        assert name not in histograms, name


def test_the_dashboard_queries_the_provisioned_datasource():
    sources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    for panel in panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert {target["datasource"]["uid"] for target in panel["targets"]} == {source["uid"]}, panel["title"]
    providers = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/mensageria.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_scrapes_every_process_on_its_configured_port():
    defaults = Settings()
    assert scrape_targets() == {name: [f"{name}:{getattr(defaults, f'metrics_port_{name}')}"] for name in PROCESSES}


def test_compose_runs_the_monitoring_profile_provisioned_and_lists_every_metrics_port():
    services = compose()["services"]
    defaults = Settings()
    for name in PROCESSES:
        assert services[name]["expose"] == [str(getattr(defaults, f"metrics_port_{name}"))], name
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        assert service["profiles"] == ["monitoring"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), service["image"]  # pinned
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "./monitoring/grafana/dashboards"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == filled_env()["GRAFANA_ADMIN_PASSWORD"]
