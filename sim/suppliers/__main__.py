"""`python -m sim.suppliers`: run supplier bots against a dispatch service until stopped.

    python -m sim.suppliers --api http://127.0.0.1:8002 --supplier acme=lvk_... --supplier beta=lvk_...
    python -m sim.suppliers --config suppliers.yaml --time-scale 600 --cursor-file cursors.json

Command-line options override the config file. On Ctrl-C / SIGTERM (or after --duration) the bots
stop and their stats (counters and every shipment reported) are written as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from shared.logs import configure_logging
from sim.suppliers.fleet import SupplierFleet
from sim.suppliers.records import FleetStats
from sim.suppliers.settings import FleetSettings, load_settings, parse_supplier

log = logging.getLogger("sim.suppliers")
app = typer.Typer(add_completion=False, help=__doc__)


def build_settings(
    config: Path | None,
    api: str | None,
    suppliers: list[str],
    time_scale: float | None,
    seed: int | None,
    request_waybills: bool | None,
    cursor_file: Path | None = None,
) -> FleetSettings:
    base = load_settings(config) if config is not None else FleetSettings()
    data: dict[str, Any] = base.model_dump()
    if api is not None:
        data["api_url"] = api
    if suppliers:
        given = [parse_supplier(s).model_dump() for s in suppliers]
        ids = {s["supplier_id"] for s in given}
        data["suppliers"] = [s for s in data["suppliers"] if s["supplier_id"] not in ids] + given
    if time_scale is not None:
        data["time_scale"] = time_scale
    if seed is not None:
        data["seed"] = seed
    if cursor_file is not None:
        data["cursor_file"] = cursor_file
    if request_waybills is not None:
        data["behaviour"] = {**data["behaviour"], "request_waybills": request_waybills}
    settings = FleetSettings.model_validate(data)
    if not settings.suppliers:
        raise ValueError("no suppliers: give --supplier ID=KEY or a config file with `suppliers`")
    return settings


async def run_fleet(settings: FleetSettings, duration_s: float | None, report_every_s: float) -> FleetStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    fleet = SupplierFleet(settings)
    log.info("starting %d supplier bots against %s (seed %d)", len(fleet.bots), settings.api_url, fleet.seed)
    async with fleet:
        deadline = None if duration_s is None else loop.time() + duration_s
        while not stop.is_set():
            wait = report_every_s if deadline is None else min(report_every_s, deadline - loop.time())
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            log.info("supplier bots: %s", fleet.stats().totals())
    return fleet.stats()


@app.command()
def main(
    api: Annotated[str | None, typer.Option(help="Base URL of dispatch (the supplier API's host).")] = None,
    supplier: Annotated[
        list[str] | None, typer.Option("--supplier", help="SUPPLIER_ID=API_KEY; repeat for more bots.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="JSON or YAML file of FleetSettings.")
    ] = None,
    time_scale: Annotated[float | None, typer.Option(help="Divide every behaviour delay by this.")] = None,
    seed: Annotated[int | None, typer.Option(help="Repeat a run's decisions.")] = None,
    request_waybills: Annotated[
        bool | None, typer.Option("--request-waybills/--own-waybills", help="Ask logistics for waybills.")
    ] = None,
    cursor_file: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Keep each bot's feed cursor here between runs.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    report_every: Annotated[float, typer.Option(help="Log the counters every this many seconds.")] = 30.0,
    stats_out: Annotated[
        Path | None, typer.Option(help="Write the final stats here (default: stdout).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run supplier bots until Ctrl-C (or --duration), then write what they did."""
    configure_logging("sim-suppliers", log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the counters
    try:
        settings = build_settings(
            config, api, supplier or [], time_scale, seed, request_waybills, cursor_file
        )
    except (ValueError, ValidationError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    stats = asyncio.run(run_fleet(settings, duration, report_every))
    report = stats.model_dump_json(indent=2)
    if stats_out is not None:
        stats_out.write_text(report + "\n", encoding="utf-8")
    else:
        typer.echo(report)


if __name__ == "__main__":
    app()
