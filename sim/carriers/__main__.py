"""`python -m sim.carriers`: serve the stand-in on $CARRIER_SIM_HTTP_HOST:$CARRIER_SIM_HTTP_PORT (9002)."""

from __future__ import annotations

import uvicorn

from shared.http import KEEP_ALIVE_S
from sim.carriers.app import create_app
from sim.carriers.settings import CarrierSimSettings


def main() -> None:
    settings = CarrierSimSettings()
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
