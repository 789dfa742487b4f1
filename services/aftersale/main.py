"""Entry point of the aftersale service: `uvicorn services.aftersale.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.kafka.faust_app import create_faust_app
from shared.service import create_service_app
from shared.settings import AftersaleSettings


def create_app(settings: AftersaleSettings | None = None) -> FastAPI:
    settings = settings or AftersaleSettings()
    faust_app = create_faust_app(settings)
    return create_service_app(settings, title="Lüyue after-sale", faust_app=faust_app)
