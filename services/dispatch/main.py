"""Entry point of the dispatch service: `uvicorn services.dispatch.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import DispatchSettings


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()
    # No faust agents yet, so no faust worker: they arrive with this service's own issue.
    return create_service_app(settings, title="Lüyue dispatch and supplier API")
