"""One whole sale: set the world up, run the buyers, the supplier bots and the shop's desk together,
wait until everything has ended (or the time is up), then read the records and report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from shared.wechat.shops import ShopRepository
from sim.sale.collect import collect_report
from sim.sale.desk import Desk
from sim.sale.driver import SaleDriver, SaleProgress
from sim.sale.observer import Observer
from sim.sale.profile import plan_sale
from sim.sale.report import SaleReport
from sim.sale.settings import SaleSettings
from sim.sale.world import Registrar, build_world, fleet_settings, setup_world
from sim.suppliers.fleet import SupplierFleet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaleUrls:
    wechat: str  # the WeChat stand-in (its control API under /sim)
    carriers: str  # the carrier stand-in
    ingest: str  # order_ingest's webhook: the shops' callback URLs
    dispatch: str  # the supplier API, for the bots
    aftersale: str  # aftersale's admin API, for the shop's desk
    kafka_bootstrap: str


async def _our_cases_open(aftersale: httpx.AsyncClient, order_ids: set[str]) -> int:
    answer = await aftersale.get("/admin/v1/cases", params={"open_only": "true"})
    answer.raise_for_status()
    return sum(1 for case in answer.json()["items"] if str(case["order_id"]) in order_ids)


async def _end_when_stalled(
    limit: asyncio.Timeout, observer: Observer, settings: SaleSettings, sale_ended_at: float
) -> None:
    """Expire `limit` once the settle time is over and nothing has changed for the stall time: a
    backlog still draining is waited for, a stuck story is not."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.poll_interval_s)
        now = time.monotonic()
        if now >= sale_ended_at + settings.settle_timeout_s and now - observer.changed_at >= (
            settings.settle_stall_s
        ):
            limit.reschedule(loop.time())
            return


async def run_sale(
    settings: SaleSettings,
    urls: SaleUrls,
    registrar: Registrar,
    *,
    shops: ShopRepository,
    on_progress: Callable[[SaleProgress], None] | None = None,
    grace_s: float = 3.0,
    supplier_cursor_file: Path | None = None,
) -> SaleReport:
    """Run the sale to its end and report. Waits for every order and after-sale case to end: at
    least `settings.settle_timeout_s` after the sale's (scaled) length, longer while anything still
    changes (up to `settle_limit_s`), then reports what it found (`report.timed_out` says it did not
    all end). The supplier bots keep their feed cursors in `supplier_cursor_file`, so a sale on a
    stack with history does not read the feeds from the start."""
    world = build_world(settings)
    plan = plan_sale(settings, world)
    timeout = httpx.Timeout(settings.request_timeout_s)
    async with AsyncExitStack() as stack:
        wechat = await stack.enter_async_context(httpx.AsyncClient(base_url=urls.wechat, timeout=timeout))
        carriers = await stack.enter_async_context(httpx.AsyncClient(base_url=urls.carriers, timeout=timeout))
        desk_token = await registrar.operator_token("sale-desk")
        aftersale = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=urls.aftersale, timeout=timeout, headers={"Authorization": f"Bearer {desk_token}"}
            )
        )
        keys = await setup_world(
            world,
            wechat=wechat,
            shops=shops,
            ingest_url=urls.ingest,
            registrar=registrar,
            aftersale=aftersale,
            auto_approve_under_fen=settings.operator.auto_approve_under_fen,
        )
        if settings.carrier_faults is not None:
            answer = await carriers.post("/sim/faults", json=settings.carrier_faults.model_dump())
            answer.raise_for_status()
        fleet = SupplierFleet(
            fleet_settings(
                world, settings, keys, dispatch_url=urls.dispatch, cursor_file=supplier_cursor_file
            )
        )
        observer = Observer(
            wechat, carriers, [s.appid for s in world.shops], poll_interval_s=settings.poll_interval_s
        )
        driver = SaleDriver(settings, plan, wechat=wechat, observer=observer, on_progress=on_progress)
        desk = Desk(settings, aftersale=aftersale, carriers=carriers, observer=observer)
        since = datetime.now(UTC)
        started = time.monotonic()
        sale_s = settings.scaled(settings.profile.duration_s)
        timed_out = False
        async with fleet:
            background = [asyncio.create_task(observer.run()), asyncio.create_task(desk.run())]
            try:
                async with asyncio.timeout(sale_s + settings.settle_limit_s) as limit:
                    background.append(
                        asyncio.create_task(_end_when_stalled(limit, observer, settings, sale_s + started))
                    )
                    await driver.run()
                    order_ids = set(driver.order_ids)
                    while True:  # our side ends after WeChat's: the last case decisions
                        if not await _our_cases_open(aftersale, order_ids):
                            break
                        await asyncio.sleep(settings.poll_interval_s)
                await asyncio.sleep(grace_s)  # the last tracking and case events reach the topics
            except TimeoutError:
                timed_out = True
                log.warning(
                    "sale: not everything ended within %.0f s (%.0f s without a change)",
                    time.monotonic() - started,
                    time.monotonic() - observer.changed_at,
                )
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            fleet_stats = fleet.stats()
        report = await collect_report(
            wechat=wechat,
            carriers=carriers,
            kafka_bootstrap=urls.kafka_bootstrap,
            appids=[s.appid for s in world.shops],
            seed=settings.seed,
            shops=len(world.shops),
            suppliers=len(world.suppliers),
            since=since,
        )
    latency = driver.latency
    return report.model_copy(
        update={
            "duration_s": round(time.monotonic() - started, 1),
            "timed_out": timed_out,
            "driver": dict(sorted(driver.counts.items())),
            "driver_errors": dict(sorted(driver.errors.items())),
            "driver_request_ms": {
                f"p{q:g}": latency.get_value_at_percentile(q) / 1000 for q in (50, 95, 99, 100)
            }
            if latency.get_total_count()
            else {},
            "suppliers_totals": fleet_stats.totals(),
            "desk": dict(sorted(desk.counts.items())),
        }
    )
