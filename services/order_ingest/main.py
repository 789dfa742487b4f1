"""Entry point of the order_ingest service: `uvicorn services.order_ingest.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import OrderIngestSettings


def create_app(settings: OrderIngestSettings | None = None) -> FastAPI:
    settings = settings or OrderIngestSettings()
    # No faust agents yet, so no faust worker: they arrive with this service's own issue.
    return create_service_app(settings, title="Lüyue order ingest")
