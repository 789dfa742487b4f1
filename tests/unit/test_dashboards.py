"""Grafana dashboards (deploy/grafana/dashboards.py) and alert rules only use metrics the code exports,
and the committed dashboard JSON is what the generator produces."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Exposed sample names per metric type (prometheus_client adds _created beside counters and histograms).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
METRIC_NAME = re.compile(r"\b(?:lvyue|process|python)_[a-z0-9_]+\b")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lvyue_dashboards", DEPLOY / "grafana" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@cache
def _exported_names() -> frozenset[str]:
    """Every sample name the services and shared code register, found by importing each module of
    services/ and shared/ that uses prometheus_client, then reading the default registry."""
    for path in sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]):
        if "prometheus_client" in path.read_text(encoding="utf-8"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            importlib.import_module(module.removesuffix(".__init__"))
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return frozenset(names)


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(METRIC_NAME.findall(without_strings))


def _dashboard_exprs() -> dict[str, list[str]]:
    exprs: dict[str, list[str]] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        exprs[path.name] = [
            target["expr"] for panel in board["panels"] for target in panel.get("targets", [])
        ]
    return exprs


def _alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_the_committed_dashboards_are_what_the_generator_produces() -> None:
    expected = _generator().rendered()
    committed = {
        path.name: path.read_text(encoding="utf-8")
        for path in (DEPLOY / "grafana" / "dashboards").glob("*.json")
    }
    assert sorted(committed) == sorted(expected), "run: python deploy/grafana/dashboards.py"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale; run: python deploy/grafana/dashboards.py"


def test_dashboards_have_unique_uids_and_panel_ids_and_use_the_provisioned_datasource() -> None:
    uids = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        uids.append(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
                assert panel["targets"], panel["title"]
    assert len(uids) == len(set(uids)) >= 5
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert {source["uid"] for source in datasources["datasources"]} == {"prometheus"}


def test_grafana_provisions_the_dashboards_from_the_compose_mount() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "lvyue.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert f"./grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


def test_the_exported_names_are_found() -> None:
    names = _exported_names()
    assert {
        "lvyue_dispatch_backlog",
        "lvyue_webhook_ack_seconds_bucket",
        "lvyue_http_requests_total",
    } <= names
    assert "process_resident_memory_bytes" in names


@pytest.mark.parametrize("dashboard", sorted(_dashboard_exprs()))
def test_dashboard_metrics_exist_in_the_code(dashboard: str) -> None:
    used = {name for expr in _dashboard_exprs()[dashboard] for name in _metric_names(expr)}
    assert used, dashboard
    assert used - _exported_names() == set()


def test_alert_metrics_exist_in_the_code() -> None:
    exprs = _alert_exprs()
    missing = {alert: _metric_names(expr) - _exported_names() for alert, expr in exprs.items()}
    assert {alert: names for alert, names in missing.items() if names} == {}
    assert all(_metric_names(expr) for alert, expr in exprs.items() if alert != "LvyueServiceDown")
