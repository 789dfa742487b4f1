"""Entry point of the logistics service: `uvicorn services.logistics.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import LogisticsSettings


def create_app(settings: LogisticsSettings | None = None) -> FastAPI:
    settings = settings or LogisticsSettings()
    # No faust agents yet, so no faust worker: they arrive with this service's own issue.
    return create_service_app(settings, title="Lüyue logistics and tracking")
