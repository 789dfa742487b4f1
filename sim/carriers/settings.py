"""The stand-in's settings: the only place in sim.carriers that reads the environment (CARRIER_SIM_*)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FaultShares(BaseModel):
    """How often the world misbehaves. Outcome shares are drawn once per tracked waybill (the rest are
    delivered normally); duplicate and out-of-order shares are drawn per push; counts are used up."""

    problem_share: float = Field(default=0.0, ge=0, le=1)  # a failed delivery attempt, then signed
    return_share: float = Field(default=0.0, ge=0, le=1)  # undeliverable: returned, then return-signed
    refusal_share: float = Field(default=0.0, ge=0, le=1)  # refused at the door, returned, return-signed
    duplicate_share: float = Field(default=0.0, ge=0, le=1)  # the same push sent twice
    out_of_order_share: float = Field(default=0.0, ge=0, le=1)  # a push held back until after the next
    # The next N Kuaidi100 subscriptions (/poll) answer returnCode 500 (服务器错误), as an overloaded
    # Kuaidi100 does: nothing is subscribed, the subscriber must try again.
    subscribe_server_errors: int = Field(default=0, ge=0)


class KdniaoAccount(BaseModel):
    """A Kdniao merchant account as configured in Kdniao's console: pushes go to callback_url."""

    ebusiness_id: str
    app_key: str
    callback_url: str


class CarrierSimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARRIER_SIM_", env_nested_delimiter="__", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9002, ge=1, le=65535)
    # Divides every timeline delay and retry delay: 3600 makes a 2-day delivery take under a minute.
    time_scale: float = Field(default=1.0, gt=0)
    # False: timelines only move through the control API (advance / force), for step-by-step tests.
    auto_advance: bool = True
    # Kuaidi100 waits 20 s for the subscriber's answer.
    push_timeout_s: float = Field(default=20.0, gt=0)
    push_concurrency: int = Field(default=64, ge=1)
    # Delays before the 2nd, 3rd, ... attempt of a push that was not acknowledged (Kuaidi100 keeps
    # trying for hours); divided by time_scale.
    retry_delays_s: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400)
    # Kuaidi100 accounts: authorisation key -> secret (the secret signs /label/order requests).
    kuaidi100_accounts: dict[str, str] = Field(default_factory=lambda: {"lvyue-sim-key": "lvyue-sim-secret"})
    kdniao_accounts: list[KdniaoAccount] = Field(default_factory=list)
    faults: FaultShares = Field(default_factory=FaultShares)
    seed: int | None = None  # fixes waybill numbers, outcomes and fault draws
