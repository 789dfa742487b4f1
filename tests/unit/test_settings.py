import pytest

from shared.settings import (
    SERVICE_SETTINGS,
    AftersaleSettings,
    DispatchSettings,
    LogisticsSettings,
    OrderIngestSettings,
)


def test_defaults_point_at_the_local_stack_and_the_real_wechat_api(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "MONGO_URI", "WECHAT_API_BASE", "ORDER_INGEST_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = OrderIngestSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.mongo.uri == "mongodb://127.0.0.1:27017/"
    assert settings.wechat.api_base == "https://api.weixin.qq.com"
    assert settings.http_port == 8001
    assert settings.consumer_group == "lvyue-order_ingest"


def test_common_settings_are_unprefixed_and_service_settings_use_their_own_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WECHAT_API_BASE", "http://127.0.0.1:9001")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("DISPATCH_HTTP_PORT", "18002")
    monkeypatch.setenv("ORDER_INGEST_HTTP_PORT", "18001")
    dispatch = DispatchSettings()
    assert dispatch.wechat.api_base == "http://127.0.0.1:9001"
    assert dispatch.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert dispatch.http_port == 18002
    assert OrderIngestSettings().http_port == 18001


def test_every_service_has_its_own_port() -> None:
    ports = [cls().http_port for cls in SERVICE_SETTINGS.values()]
    assert len(set(ports)) == len(ports) == 4


def test_the_services_after_dispatch_let_their_fetches_wait_longer_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_STREAM_FETCH_MAX_WAIT_MS", raising=False)
    assert OrderIngestSettings().kafka.stream_fetch_max_wait_ms == 25  # the order path keeps its latency
    assert DispatchSettings().kafka.stream_fetch_max_wait_ms == 25
    assert LogisticsSettings().kafka.stream_fetch_max_wait_ms == 250
    assert AftersaleSettings().kafka.stream_fetch_max_wait_ms == 250
    monkeypatch.setenv("KAFKA_STREAM_FETCH_MAX_WAIT_MS", "40")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092")
    logistics = LogisticsSettings()
    assert logistics.kafka.stream_fetch_max_wait_ms == 40
    assert logistics.kafka.bootstrap_servers == "broker-1:9092"


def test_an_idle_stream_consumer_long_polls_two_seconds_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_STREAM_IDLE_FETCH_WAIT_MS", raising=False)
    assert DispatchSettings().kafka.stream_idle_fetch_wait_ms == 2000
    assert LogisticsSettings().kafka.stream_idle_fetch_wait_ms == 2000
    monkeypatch.setenv("KAFKA_STREAM_IDLE_FETCH_WAIT_MS", "1000")
    assert OrderIngestSettings().kafka.stream_idle_fetch_wait_ms == 1000
