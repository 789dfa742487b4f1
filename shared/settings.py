"""Configuration: one settings object per service, plus the common Kafka, MongoDB and WeChat parts.

Common parts read unprefixed variables (``KAFKA_BOOTSTRAP_SERVERS``, ``MONGO_URI``, ``WECHAT_API_BASE``);
each service reads its own prefix (``ORDER_INGEST_HTTP_PORT``, ``DISPATCH_HTTP_PORT``, ...).
This module is the only place that reads the environment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The local stack's credential between services; production sets its own.
LOCAL_SERVICE_TOKEN = "local-service-token"


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    # Partitions for topics this project creates; production raises it (see deploy/README).
    default_partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Bounds per-hop latency; measured by the benchmarks.
    producer_linger_ms: int = Field(default=5, ge=0)
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    # faust's consumers fetch with aiokafka's fetch_min_bytes=1: under load the broker answers a
    # fetch per few messages. Waiting up to `stream_fetch_max_wait_ms` for this many bytes batches them.
    stream_fetch_min_bytes: int = Field(default=16_384, ge=1)
    stream_fetch_max_wait_ms: int = Field(default=25, ge=0)
    # Once a fetch came back empty, the next asks for any byte and waits up to this long: the broker
    # answers as soon as a record arrives, so it adds no latency, and an idle consumer fetches every 2 s
    # instead of every `stream_fetch_max_wait_ms` (each fetch of every partition costs its consumer
    # thread about a millisecond of Python). A rebalance's first fetch may queue behind one such wait.
    stream_idle_fetch_wait_ms: int = Field(default=2_000, ge=0)
    # The most a fetch returns per partition (faust's default is 1 MiB). A consumer behind under a spike
    # held a MiB per partition per topic (tracemalloc: 8-10 MiB in dispatch at its peak); 256 KiB is
    # still ~150 messages per partition per fetch.
    consumer_max_fetch_bytes: int = Field(default=262_144, ge=16_384)
    request_timeout_ms: int = Field(default=4_000, ge=500)
    # Where a consumer group with no committed offset starts. "earliest": a new service instance
    # processes everything kept; tests that start fresh groups on a shared broker use "latest".
    consumer_offset_reset: Literal["earliest", "latest"] = "earliest"
    # A consumer that stops (or gives up partitions) waits this long for the events it is still
    # processing; what is unfinished then stays uncommitted and is processed again by the next owner.
    # Bounded so a handler waiting out a WeChat outage cannot hold a shutdown past its deadline.
    stop_grace_s: float = Field(default=15.0, ge=0)


class MongoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONGO_", extra="ignore")

    uri: str = "mongodb://127.0.0.1:27017/"
    database: str = "lvyue"
    server_selection_timeout_ms: int = Field(default=5_000, ge=100)


class WeChatSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WECHAT_", extra="ignore")

    # The real API by default; point it at the stand-in (sim/) or a test double.
    api_base: str = "https://api.weixin.qq.com"
    request_timeout_s: float = Field(default=5.0, gt=0)
    # Connections per process, all kept alive (shared.http.PooledTransport); calls beyond them wait.
    pool_connections: int = Field(default=32, ge=1)
    # Access tokens: refreshed this long before WeChat's expiry; shared by every process.
    token_refresh_margin_s: int = Field(default=300, ge=0)
    token_lock_lease_s: float = Field(default=10.0, gt=0)
    # WeChat API resilience.
    api_max_attempts: int = Field(default=4, ge=1)
    api_backoff_initial_s: float = Field(default=0.2, gt=0)
    breaker_failure_threshold: int = Field(default=10, ge=1)
    breaker_reset_timeout_s: float = Field(default=30.0, gt=0)


class GcSettings(BaseSettings):
    """Python's garbage collector in a service (see shared/gc_policy.py): GC_YOUNG_THRESHOLD, ..."""

    model_config = SettingsConfigDict(env_prefix="GC_", extra="ignore")

    # CPython's default is 700: under load, a batch's objects outlive that and get promoted.
    young_threshold: int = Field(default=10_000, ge=100)
    freeze_survivors: bool = True
    # 0: never sweep (only sensible with freeze_survivors off).
    full_sweep_interval_s: float = Field(default=900.0, ge=0)


class ServiceSettings(BaseSettings):
    """Fields every service has; subclasses set the env prefix and the defaults."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str
    environment: Environment = Environment.LOCAL
    http_host: str = "127.0.0.1"
    http_port: int
    # A second, private listener (shared/listeners.py) for what must not face the internet: the
    # internal API, /metrics and /docs. None: one listener serves everything.
    internal_http_port: int | None = None
    log_level: str = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    wechat: WeChatSettings = Field(default_factory=WeChatSettings)
    gc: GcSettings = Field(default_factory=GcSettings)

    # Set when uvicorn runs several worker processes: prometheus_client reads the same variable.
    prometheus_multiproc_dir: str | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    # The faust app id (consumer group); tests run a second instance beside a running one.
    kafka_group: str | None = None
    # An operator token is read from the database again after this long: a revoked or expired one
    # stops working within it.
    operator_token_ttl_s: float = Field(default=30.0, ge=0)

    @property
    def consumer_group(self) -> str:
        return self.kafka_group or f"lvyue-{self.service_name}"


class OrderIngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_INGEST_", extra="ignore")

    service_name: str = "order_ingest"
    http_port: int = 8001
    # "all": webhook and worker in one process; "web" / "worker": one role per process, so the
    # webhook's acknowledgements never wait behind the worker's batches (production runs both).
    role: Literal["all", "web", "worker"] = "all"
    # Webhook: WeChat waits 5 s; we answer 5xx well before if Kafka does not confirm the write.
    webhook_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    webhook_replay_window_s: int = Field(default=600, ge=1)
    webhook_kafka_ack_timeout_s: float = Field(default=3.0, gt=0)
    shop_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Worker: a push that keeps failing is retried this often, then dead-lettered (replayable).
    worker_batch_size: int = Field(default=200, ge=1)
    # Batches taken at once (each order's pushes stay in order across them): a few slow order/get
    # calls of one batch no longer hold back the next batch's orders.
    worker_batches_in_flight: int = Field(default=3, ge=1, le=16)
    worker_max_attempts: int = Field(default=5, ge=1)
    worker_backoff_initial_s: float = Field(default=0.5, gt=0)
    # A push waits this long for a shop's open WeChat circuit breaker before it is dead-lettered.
    breaker_patience_s: float = Field(default=300.0, ge=0)
    # Reconciliation (in worker processes): orders updated in the last window, every interval (0: off).
    reconcile_interval_s: float = Field(default=300.0, ge=0)
    reconcile_window_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)


class DispatchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCH_", extra="ignore")

    service_name: str = "dispatch"
    http_port: int = 8002
    # Supplier API: requests per second and burst per supplier (429 + Retry-After beyond).
    supplier_rate_per_s: float = Field(default=20.0, gt=0)
    supplier_burst: int = Field(default=40, ge=1)
    # Calls in flight at once per API key (429 + Retry-After beyond): each holds memory here.
    supplier_max_in_flight: int = Field(default=16, ge=1)
    feed_max_wait_s: float = Field(default=30.0, ge=0)
    feed_linger_s: float = Field(default=0.1, ge=0, le=1)
    feed_max_page: int = Field(default=500, ge=1)
    # The JSON of this many newest feed changes is kept in memory (about 1 KB each); a supplier reading
    # further back gets older changes rendered from the database.
    feed_cached_changes: int = Field(default=5_000, ge=0)
    # A feed page reads back at most this many version documents (a supplier far behind gets shorter pages).
    feed_max_reads: int = Field(default=50, ge=1)
    # Version documents read back at once (old feed changes, final dispatch orders), over all callers.
    read_backs_at_once: int = Field(default=8, ge=1)
    # Keys are cached per process and read again after this long; an expired entry still answers for
    # up to `api_key_stale_s` while that read runs. A revoked key stops working once the read lands.
    api_key_cache_ttl_s: float = Field(default=5.0, ge=0)
    api_key_stale_s: float = Field(default=30.0, ge=0)
    # The newest first answers per Idempotency-Key kept in memory (a dispatch order's JSON each, ~1.5
    # KB), about 10 s of them at 100 orders/s: a retry comes within seconds; an older key is read back
    # from the database (a hit: cheap).
    idempotency_cache_size: int = Field(default=2_000, ge=0)
    # A first answer is kept this long (a repeat after that is a new request); expired answers are
    # deleted every `idempotency_sweep_interval_s`.
    idempotency_retention_s: float = Field(default=86_400.0, gt=0)
    idempotency_sweep_interval_s: float = Field(default=600.0, gt=0)
    # Routes and suppliers are re-read this often; a change retries the held orders.
    route_reload_interval_s: float = Field(default=2.0, gt=0)
    # Waybills and labels come from logistics' internal API (its private listener), with the
    # service credential logistics expects.
    logistics_url: str = "http://127.0.0.1:8013"
    logistics_api_token: SecretStr = SecretStr(LOCAL_SERVICE_TOKEN)
    worker_batch_size: int = Field(default=200, ge=1)
    # Batches of one topic processed at once (each order's messages stay in order across them): a
    # batch's database writes and Kafka publishes overlap the next batch's routing.
    worker_batches_in_flight: int = Field(default=3, ge=1, le=16)


class DownstreamKafkaSettings(KafkaSettings):
    """Kafka for the services after dispatch (logistics, aftersale), whose work waits on carriers and
    buyers: their consumers let a fetch wait longer to fill. The fetch loop is the consumer thread's
    cost when there is little to read: 2.5-4% of a core per service at 25 ms, about 1% at 100 (CPU
    per thread from /proc, stack idle, 2026-12-04). KAFKA_STREAM_FETCH_MAX_WAIT_MS still sets it."""

    stream_fetch_max_wait_ms: int = Field(default=250, ge=0)


class LogisticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOGISTICS_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=DownstreamKafkaSettings)
    service_name: str = "logistics"
    http_port: int = 8003  # public: carrier callbacks (and health checks) only
    internal_http_port: int | None = 8013  # the internal API dispatch calls, /metrics, /docs
    # The credential callers of the internal API send (`Authorization: Bearer`).
    internal_api_token: SecretStr = SecretStr(LOCAL_SERVICE_TOKEN)
    # Deadlines (hours): ship-by warning before WeChat's delivery_deadline, carrier pickup after a
    # waybill, no tracking update, delivered but not confirmed by the buyer.
    ship_by_warning_hours: float = Field(default=6.0, ge=0)
    pickup_within_hours: float = Field(default=24.0, gt=0)
    stalled_after_hours: float = Field(default=48.0, gt=0)
    unconfirmed_after_hours: float = Field(default=7 * 24.0, gt=0)
    deadline_scan_interval_s: float = Field(default=30.0, gt=0)
    # Carrier callbacks (Kuaidi100 salt, Kdniao AppKey) and the aggregator (Kuaidi100-style) account.
    kuaidi100_salt: SecretStr = SecretStr("local-kuaidi100-salt")
    kdniao_app_key: SecretStr = SecretStr("local-kdniao-app-key")
    kdniao_business_id: str = "1000000"
    aggregator_url: str = "http://127.0.0.1:9002"
    aggregator_key: SecretStr = SecretStr("lvyue-sim-key")  # the carrier stand-in's default account
    aggregator_secret: SecretStr = SecretStr("lvyue-sim-secret")
    aggregator_partner_id: str = "lvyue-local"  # the merchant's carrier account at the aggregator
    # Where carriers push tracking: this service's public base URL.
    public_url: str = "http://127.0.0.1:8003"
    worker_batch_size: int = Field(default=200, ge=1)


class AftersaleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AFTERSALE_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=DownstreamKafkaSettings)
    service_name: str = "aftersale"
    http_port: int = 8004
    # The default policy of a shop without its own (`lvyue aftersale policy`).
    auto_refund_before_shipment: bool = True
    auto_approve_under_fen: int = Field(default=0, ge=0)
    deadline_warning_hours: float = Field(default=12.0, ge=0)
    # Deferred refunds, deadline warnings and supplier return addresses are revisited this often.
    tick_interval_s: float = Field(default=5.0, gt=0)
    worker_batch_size: int = Field(default=200, ge=1)


SERVICE_SETTINGS: dict[str, type[ServiceSettings]] = {
    "order_ingest": OrderIngestSettings,
    "dispatch": DispatchSettings,
    "logistics": LogisticsSettings,
    "aftersale": AftersaleSettings,
}


class OperatorClientSettings(BaseSettings):
    """The command line's operator token: `LVYUE_OPERATOR_TOKEN`, or a file named by
    `LVYUE_OPERATOR_TOKEN_FILE` (its first line)."""

    model_config = SettingsConfigDict(env_prefix="LVYUE_OPERATOR_", extra="ignore")

    token: SecretStr | None = None
    token_file: str | None = None


class LocalStackSettings(BaseSettings):
    """Where `make up` / `make run` put the embedded stack's data and logs, and its ports."""

    model_config = SettingsConfigDict(env_prefix="LVYUE_STACK_", extra="ignore")

    run_dir: str = ".run"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    mongo_port: int = 27017
    ferretdb_debug_port: int = 27018  # Go's /debug/pprof of the FerretDB process (profiles)
    prometheus_port: int = 9090
    wechat_sim_port: int = 9001
    carrier_sim_port: int = 9002
    kafka_heap: str = "512m"
