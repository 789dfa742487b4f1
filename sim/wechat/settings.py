"""The stand-in's settings: the only place in sim.wechat that reads the environment (WECHAT_SIM_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WeChatSimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WECHAT_SIM_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9001, ge=1, le=65535)
    # access_token lifetime (WeChat: 7200 s) and how long a superseded /cgi-bin/token token still works.
    token_ttl_s: int = Field(default=7200, ge=1)
    old_token_overlap_s: int = Field(default=300, ge=0)
    # Divides the push retry delays: 600 makes WeChat's 10 s / 1 min / 5 min ... retries take 1/600 of that.
    time_scale: float = Field(default=1.0, gt=0)
    # WeChat waits at most 5 s for the receiver's "success".
    push_timeout_s: float = Field(default=5.0, gt=0)
    # Pushes in flight at once (each order's pushes still leave in the order they were queued).
    push_concurrency: int = Field(default=64, ge=1)
