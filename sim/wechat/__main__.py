"""`python -m sim.wechat`: serve the stand-in on 127.0.0.1:$WECHAT_SIM_HTTP_PORT (9001)."""

from __future__ import annotations

import uvicorn

from shared.http import KEEP_ALIVE_S
from sim.wechat.app import create_app
from sim.wechat.settings import WeChatSimSettings


def main() -> None:
    settings = WeChatSimSettings()
    uvicorn.run(
        create_app(settings=settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=False,  # every call is in GET /sim/calls; a log line each costs CPU at sale rates
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=False,  # nothing stands in front of it; uvicorn's check cost a few % of each call
    )


if __name__ == "__main__":
    main()
