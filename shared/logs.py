"""Structured JSON logs on stderr, one object per line, with the service name on every record."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{service}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    )
    handler.addFilter(_ServiceFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; route them through ours.
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # aiokafka and faust are chatty at INFO during rebalances.
    for name in ("aiokafka", "faust", "mode", "uvicorn.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # httpx logs every request at INFO: noise (and CPU) at sale rates; the services' metrics count calls.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
