"""Entry point of the dispatch service: `uvicorn services.dispatch.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.kafka.faust_app import create_faust_app
from shared.service import create_service_app
from shared.settings import DispatchSettings


def create_app(settings: DispatchSettings | None = None) -> FastAPI:
    settings = settings or DispatchSettings()
    faust_app = create_faust_app(settings)
    return create_service_app(settings, title="Lüyue dispatch and supplier API", faust_app=faust_app)
