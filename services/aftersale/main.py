"""Entry point of the aftersale service: `uvicorn services.aftersale.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import AftersaleSettings


def create_app(settings: AftersaleSettings | None = None) -> FastAPI:
    settings = settings or AftersaleSettings()
    # No faust agents yet, so no faust worker: they arrive with this service's own issue.
    return create_service_app(settings, title="Lüyue after-sale")
