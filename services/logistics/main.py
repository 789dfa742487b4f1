"""Entry point of the logistics service: `uvicorn services.logistics.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.kafka.faust_app import create_faust_app
from shared.service import create_service_app
from shared.settings import LogisticsSettings


def create_app(settings: LogisticsSettings | None = None) -> FastAPI:
    settings = settings or LogisticsSettings()
    faust_app = create_faust_app(settings)
    return create_service_app(settings, title="Lüyue logistics and tracking", faust_app=faust_app)
