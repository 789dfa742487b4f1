"""The production compose file speaks the same settings language as the services."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import SERVICE_SETTINGS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


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
