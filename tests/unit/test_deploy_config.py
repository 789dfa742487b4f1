"""The production deployment (deploy/): the compose file speaks the same settings language as the services,
Prometheus scrapes all of them, and the alert rules pass promtool and their unit tests."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.settings import SERVICE_SETTINGS, KafkaSettings, MongoSettings, WeChatSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMTOOL_TESTS = Path(__file__).resolve().parents[1] / "prometheus" / "alerts_test.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_every_compose_variable_reaches_the_service_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = _compose()["services"][service.replace("_", "-")]
    environment: dict[str, str] = definition["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SERVICE_SETTINGS[service]()
    assert settings.kafka.bootstrap_servers == environment["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.kafka.replication_factor == 3
    assert settings.mongo.uri == environment["MONGO_URI"]
    assert settings.environment.value == "production"
    assert str(settings.http_port) in definition["command"]
    assert f"services.{service}.main:create_app" in definition["command"]


def test_compose_mounts_files_that_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source


LVYUE_SERVICES = ["order-ingest", "order-ingest-worker", "dispatch", "logistics", "aftersale"]


def _port(definition: dict[str, Any]) -> str:
    command: list[str] = definition["command"]
    return command[command.index("--port") + 1]


def _private_port(definition: dict[str, Any]) -> str:
    """Where a service answers /metrics and its internal API: its private listener, if it has one."""
    environment: dict[str, str] = definition["environment"]
    private = next((v for k, v in environment.items() if k.endswith("_INTERNAL_HTTP_PORT")), None)
    return private or _port(definition)


def _prometheus() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    return loaded


def test_compose_runs_every_service_with_the_same_image_and_a_readiness_check() -> None:
    services = _compose()["services"]
    for name in LVYUE_SERVICES:
        definition = services[name]
        assert definition["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert "uvicorn" in definition["command"] and "--factory" in definition["command"], name
        test = " ".join(definition["healthcheck"]["test"])
        assert f"http://127.0.0.1:{_port(definition)}/readyz" in test, name
        assert {"kafka-1", "kafka-2", "kafka-3", "mongo-1"} <= set(definition["depends_on"]), name
        environment = definition["environment"]
        assert environment["WECHAT_API_BASE"].startswith("https://"), name


def test_dispatch_reaches_logistics_by_its_compose_name_once_it_is_healthy() -> None:
    services = _compose()["services"]
    dispatch = services["dispatch"]
    assert (
        dispatch["environment"]["DISPATCH_LOGISTICS_URL"]
        == f"http://logistics:{_private_port(services['logistics'])}"
    )
    assert dispatch["depends_on"]["logistics"] == {"condition": "service_healthy"}


def test_logistics_secrets_and_public_url_have_no_production_default() -> None:
    environment = _compose()["services"]["logistics"]["environment"]
    for name in ("LOGISTICS_PUBLIC_URL", "LOGISTICS_KUAIDI100_SALT", "LOGISTICS_KDNIAO_APP_KEY"):
        assert environment[name].startswith(f"${{{name}:?"), name  # compose refuses to start without it


def test_the_internal_api_is_private_and_needs_the_service_credential() -> None:
    services = _compose()["services"]
    logistics, dispatch = services["logistics"], services["dispatch"]
    private = _private_port(logistics)
    assert private != _port(logistics)
    assert not any(mapping.endswith(f":{private}") for mapping in logistics["ports"])  # never published
    required = "${LVYUE_SERVICE_TOKEN:?"
    assert logistics["environment"]["LOGISTICS_INTERNAL_API_TOKEN"].startswith(required)
    assert dispatch["environment"]["DISPATCH_LOGISTICS_API_TOKEN"].startswith(required)


def test_prometheus_scrapes_every_service_at_its_compose_port() -> None:
    services = _compose()["services"]
    targets = {
        job["job_name"]: [t for config in job["static_configs"] for t in config["targets"]]
        for job in _prometheus()["scrape_configs"]
    }
    for name in LVYUE_SERVICES:
        assert targets[name.replace("-", "_")] == [f"{name}:{_private_port(services[name])}"], name


def test_alert_rules_name_severity_summary_description_and_runbook() -> None:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_a_promtool_unit_test() -> None:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    unit_tests = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    firing = {
        case["alertname"] for test in unit_tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    assert alerts <= firing, alerts - firing


@pytest.mark.parametrize(
    "arguments",
    [
        ["check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        ["test", "rules", str(PROMTOOL_TESTS)],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(arguments: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool comes with Debian's prometheus package (make setup installs it)")
    result = subprocess.run([promtool, *arguments], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_variable_in_compose_names_a_setting() -> None:
    """The settings ignore unknown variables, so a misspelt one would silently keep the local default."""
    services = _compose()["services"]
    common: dict[str, type[BaseSettings]] = {
        "KAFKA_": KafkaSettings,
        "MONGO_": MongoSettings,
        "WECHAT_": WeChatSettings,
    }
    for name in LVYUE_SERVICES:
        settings = SERVICE_SETTINGS[name.removesuffix("-worker").replace("-", "_")]
        prefix = str(settings.model_config["env_prefix"])
        for variable in services[name]["environment"]:
            owner: type[BaseSettings] = settings
            for common_prefix, common_settings in common.items():
                if variable.startswith(common_prefix):
                    owner, prefix_here = common_settings, common_prefix
                    break
            else:
                prefix_here = prefix
            assert variable.startswith(prefix_here), (name, variable)
            assert variable.removeprefix(prefix_here).lower() in owner.model_fields, (name, variable)
