"""A service process loads what it runs, not the command-line tools beside it: each module costs
memory in every process (the RSS target is 200 MB per service)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# click is not listed: uvicorn, which runs every service, imports it itself.
CLI_ONLY = ("rich", "pygments", "typer")


@pytest.mark.parametrize(
    "entry_point",
    [
        "services.order_ingest.main",
        "services.dispatch.main",
        "services.logistics.main",
        "services.aftersale.main",
    ],
)
def test_a_service_imports_no_command_line_library(entry_point: str) -> None:
    probe = f"import sys, {entry_point}; print(','.join(m for m in {CLI_ONLY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert loaded == ""


def test_httpx_still_works_without_its_command_line_client() -> None:
    probe = (
        "import sys, services, httpx; "
        "print(httpx.Client().build_request('GET', 'http://x/a?b=1').url, 'rich' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert shown == "http://x/a?b=1 False"  # and the command-line client was not loaded
