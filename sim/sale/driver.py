"""The buyers: an open-loop generator that places the planned orders in the WeChat stand-in on the
profile's schedule, then lives each order's story (pay or not, change the address, urge, cancel,
ask for an after-sale, send a return back, confirm receipt) at the planned delays.

An order's story waits for what the buyer would see (its status at WeChat, its parcels' tracking at
the carrier) through the `Observer`; nothing here reads our system. Every control request's latency
goes into an HdrHistogram, measured from when the request was due (open loop: a slow stand-in shows
as latency, not as a slower sale).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hdrh.histogram import HdrHistogram

from shared.wechat.api import OrderStatus
from sim.sale.observer import FINAL_CASE_STATUSES, FINAL_ORDER_STATUSES, Observer
from sim.sale.profile import AFTER_DELIVERY, Fate, PlannedOrder
from sim.sale.settings import SaleSettings
from sim.sale.world import BUYERS
from sim.suppliers.settings import Delay

log = logging.getLogger(__name__)

UNSHIPPED = frozenset({OrderStatus.AWAITING_SHIPMENT, OrderStatus.PARTIALLY_SHIPPED})


@dataclass
class SaleProgress:
    """Counts per stage as the buyers see them, for a live display."""

    elapsed_s: float
    due: int
    counts: dict[str, int]
    request_p99_ms: float


@dataclass
class OrderTrace:
    """One order's story as the driver lived it."""

    planned: PlannedOrder
    order_id: str | None = None
    case_ids: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    done: bool = False


class SaleDriver:
    def __init__(
        self,
        settings: SaleSettings,
        plan: list[PlannedOrder],
        *,
        wechat: httpx.AsyncClient,
        observer: Observer,
        on_progress: Callable[[SaleProgress], None] | None = None,
    ) -> None:
        self._settings = settings
        self._plan = plan
        self._wechat = wechat
        self._observer = observer
        self._on_progress = on_progress
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = HdrHistogram(1, 60_000_000, 3)  # microseconds
        self.traces: dict[int, OrderTrace] = {p.index: OrderTrace(p) for p in plan}
        self._started = 0.0
        self._rng = random.Random(f"driver|{settings.seed}")
        # Buyers' calls in flight at once: thousands queued in httpx's pool cost it quadratic time
        # (it re-scans its queue for every request), which starved the whole sale.
        self._in_flight = asyncio.Semaphore(settings.max_control_requests)

    # --- the whole sale ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Every order's story, each started at its arrival time; returns when all have ended."""
        self._started = time.monotonic()
        reporter = asyncio.create_task(self._report_progress())
        try:
            async with asyncio.TaskGroup() as group:
                for planned in self._plan:
                    group.create_task(self._story(planned), name=f"order-{planned.index}")
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            self._progress()

    @property
    def order_ids(self) -> list[str]:
        return [t.order_id for t in self.traces.values() if t.order_id is not None]

    def unfinished(self) -> list[OrderTrace]:
        return [t for t in self.traces.values() if not t.done]

    def progress(self) -> SaleProgress:
        elapsed = time.monotonic() - self._started if self._started else 0.0
        due = sum(1 for p in self._plan if self._settings.scaled(p.at_s) <= elapsed)
        p99 = self.latency.get_value_at_percentile(99) / 1000 if self.latency.get_total_count() else 0.0
        return SaleProgress(elapsed, due, dict(sorted(self.counts.items())), p99)

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress())

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._progress()

    # --- one order's story ------------------------------------------------------------------------

    async def _story(self, planned: PlannedOrder) -> None:
        trace = self.traces[planned.index]
        try:
            await self._sleep_until(self._settings.scaled(planned.at_s))
            order = await self._control("create", "POST", "/sim/orders", self._new_order(planned))
            if order is None:
                return
            order_id = trace.order_id = str(order["order_id"])
            self._step(trace, "created")
            await self._live(trace, planned, order_id)
        except Exception:  # one buyer's surprise must not end the sale
            self.errors["story_failed"] += 1
            log.exception("sale: the story of order %s failed", trace.order_id or planned.index)
        finally:
            trace.done = True

    async def _live(self, trace: OrderTrace, planned: PlannedOrder, order_id: str) -> None:
        delays = self._settings.delays
        if planned.fate is Fate.UNPAID_TIMEOUT:
            await self._wait(delays.unpaid_timeout)
            if await self._control("timeout", "POST", f"/sim/orders/{order_id}/cancel", {"cancel_type": 2}):
                self._step(trace, "unpaid_timeout")
            return
        if planned.fate is Fate.CANCEL_UNPAID:
            await self._wait(delays.cancel_unpaid)
            if await self._control("cancel", "POST", f"/sim/orders/{order_id}/cancel", {"cancel_type": 1}):
                self._step(trace, "cancelled_unpaid")
            return
        await self._wait(delays.pay)
        if await self._control("pay", "POST", f"/sim/orders/{order_id}/pay") is None:
            return
        self._step(trace, "paid")
        side_steps = []
        if planned.address_change:
            side_steps.append(asyncio.create_task(self._change_address(trace, order_id)))
        if planned.urge:
            side_steps.append(asyncio.create_task(self._urge(trace, order_id)))
        try:
            match planned.fate:
                case Fate.CANCEL_BEFORE_SHIP:
                    await self._wait(delays.cancel_before_ship)
                    line = planned.lines[0]
                    await self._aftersale(
                        trace, order_id, "REFUND", line.sku.product_id, line.sku.sku_id, line.count
                    )
                case Fate.REFUND_IN_TRANSIT:
                    await self._refund_in_transit(trace, order_id)
                case Fate.REFUND_UNSENT:
                    await self._refund_unsent(trace, planned, order_id)
                case fate if fate in AFTER_DELIVERY:
                    await self._after_delivery(trace, planned, order_id)
                case _:
                    pass
            await self._settle(trace, order_id)
        finally:
            for task in side_steps:
                task.cancel()
            await asyncio.gather(*side_steps, return_exceptions=True)

    async def _change_address(self, trace: OrderTrace, order_id: str) -> None:
        await self._wait(self._settings.delays.address_change)
        if self._observer.status(order_id) not in UNSHIPPED:
            self.counts["address_change_too_late"] += 1
            return
        name, province, city, county, detail = BUYERS[(trace.planned.buyer + 1) % len(BUYERS)]
        body = {
            "user_name": name,
            "province_name": province,
            "city_name": city,
            "county_name": county,
            "detail_info": f"{detail} {trace.planned.buyer % 30 + 1} 单元",
            "tel_number": f"139{trace.planned.buyer:08d}"[:11],
        }
        if await self._control("address", "POST", f"/sim/orders/{order_id}/address", body, refusal_ok=True):
            self._step(trace, "address_changed")

    async def _urge(self, trace: OrderTrace, order_id: str) -> None:
        await self._wait(self._settings.delays.urge)
        if self._observer.status(order_id) in UNSHIPPED and await self._control(
            "urge", "POST", f"/sim/orders/{order_id}/urge", refusal_ok=True
        ):
            self._step(trace, "urged")

    async def _refund_in_transit(self, trace: OrderTrace, order_id: str) -> None:
        """Once a parcel is on its way, refund-only for what it carries (whatever the carrier does next)."""
        while True:
            status = self._observer.status(order_id)
            if status in FINAL_ORDER_STATUSES:
                return
            travelling = [p for p in self._observer.parcels(order_id) if not p.finished]
            if travelling:
                (product_id, sku_id), count = next(iter(travelling[0].units.items()))
                await self._aftersale(trace, order_id, "REFUND", product_id, sku_id, count)
                return
            if self._observer.parcels(order_id) and status not in UNSHIPPED:
                # Everything arrived before the buyer changed their mind: refund what was delivered.
                await self._after_delivery_case(trace, order_id, "REFUND")
                return
            await self._observer.next_look()

    async def _refund_unsent(self, trace: OrderTrace, planned: PlannedOrder, order_id: str) -> None:
        """Once part of the order has shipped, refund-only for units of a line not sent yet (the buyer
        keeps what is on its way). An order that ships whole first is kept."""
        while True:
            status = self._observer.status(order_id)
            if status == OrderStatus.PARTIALLY_SHIPPED:
                shipped: Counter[tuple[str, str]] = Counter()
                for parcel in self._observer.parcels(order_id):
                    shipped.update(parcel.units)
                for line in planned.lines:
                    key = (line.sku.product_id, line.sku.sku_id)
                    if line.count > shipped[key]:
                        self.counts["refund_unsent_asked"] += 1
                        await self._aftersale(trace, order_id, "REFUND", *key, line.count - shipped[key])
                        return
            if status in FINAL_ORDER_STATUSES or (status is not None and status not in UNSHIPPED):
                self.counts["refund_unsent_shipped_whole"] += 1
                return
            await self._observer.next_look()

    async def _after_delivery(self, trace: OrderTrace, planned: PlannedOrder, order_id: str) -> None:
        if not await self._until_all_arrived(order_id):
            return
        await self._wait(self._settings.delays.aftersale_after_delivery)
        kind = planned.fate.aftersale_type or "REFUND"
        await self._after_delivery_case(trace, order_id, kind, withdraw=planned.withdraw)

    async def _after_delivery_case(
        self, trace: OrderTrace, order_id: str, kind: str, *, withdraw: bool = False
    ) -> None:
        delivered = [p for p in self._observer.parcels(order_id) if p.delivered]
        if not delivered:
            self.counts[f"aftersale_{kind.lower()}_nothing_delivered"] += 1
            return
        (product_id, sku_id), count = next(iter(delivered[0].units.items()))
        await self._aftersale(
            trace, order_id, kind, product_id, sku_id, count if kind == "REFUND" else 1, withdraw=withdraw
        )

    async def _until_all_arrived(self, order_id: str) -> bool:
        """Until every unit has shipped and every parcel's journey ended (False: the order ended first)."""
        while True:
            status = self._observer.status(order_id)
            if status in FINAL_ORDER_STATUSES:
                return False
            parcels = self._observer.parcels(order_id)
            if status == OrderStatus.AWAITING_RECEIPT and parcels and all(p.finished for p in parcels):
                return True
            await self._observer.next_look()

    async def _aftersale(
        self,
        trace: OrderTrace,
        order_id: str,
        kind: str,
        product_id: str,
        sku_id: str,
        count: int,
        *,
        withdraw: bool = False,
    ) -> None:
        """Open a case and see it through as the buyer: send an approved return back, or withdraw."""
        body = {
            "type": kind,
            "product_id": product_id,
            "sku_id": sku_id,
            "count": count,
            "reason": "不想要了",
        }
        case = await self._control(
            f"aftersale_{kind.lower()}", "POST", f"/sim/orders/{order_id}/aftersale", body, refusal_ok=True
        )
        if case is None:
            return
        case_id = str(case["after_sale_order_id"])
        trace.case_ids.append(case_id)
        self._step(trace, f"aftersale_{kind.lower()}")
        withdraw_task = asyncio.create_task(self._withdraw(trace, case_id)) if withdraw else None
        sent_back = False
        try:
            while True:
                status = self._observer.case_status(case_id)
                if status in FINAL_CASE_STATUSES:
                    self._step(trace, f"aftersale_{kind.lower()}_{str(status).lower()}")
                    return
                if status == "USER_WAIT_RETURN" and not sent_back:
                    sent_back = True
                    await self._wait(self._settings.delays.send_return)
                    waybill = "SF" + "".join(self._rng.choice("0123456789") for _ in range(13))
                    sent = await self._control(
                        "send_return",
                        "POST",
                        f"/sim/aftersales/{case_id}/return",
                        {"delivery_id": "SF", "waybill_id": waybill},
                        refusal_ok=True,
                    )
                    if sent:
                        self._step(trace, "return_sent")
                await self._observer.next_look()
        finally:
            if withdraw_task is not None:
                withdraw_task.cancel()
                await asyncio.gather(withdraw_task, return_exceptions=True)

    async def _withdraw(self, trace: OrderTrace, case_id: str) -> None:
        await self._wait(self._settings.delays.withdraw)
        if self._observer.case_status(case_id) == "MERCHANT_PROCESSING" and await self._control(
            "withdraw", "POST", f"/sim/aftersales/{case_id}/cancel", refusal_ok=True
        ):
            self._step(trace, "aftersale_withdrawn")

    async def _settle(self, trace: OrderTrace, order_id: str) -> None:
        """The end of the story: parcels that came back are refunded, what arrived is confirmed."""
        refunded_returns: set[str] = set()
        while True:
            status = self._observer.status(order_id)
            if status in FINAL_ORDER_STATUSES:
                self._step(trace, f"final_{OrderStatus(status).name.lower()}")
                return
            parcels = self._observer.parcels(order_id)
            arrived = status == OrderStatus.AWAITING_RECEIPT and parcels and all(p.finished for p in parcels)
            if not arrived:
                await self._observer.next_look()
                continue
            back = [p for p in parcels if p.returned and p.waybill_id not in refunded_returns]
            if back:
                for parcel in back:
                    refunded_returns.add(parcel.waybill_id)
                    for (product_id, sku_id), units in parcel.units.items():
                        count = min(units, self._refundable(order_id, product_id, sku_id))
                        if count > 0:  # the buyer never got them: refund-only
                            await self._aftersale(trace, order_id, "REFUND", product_id, sku_id, count)
                continue
            if any(p.delivered for p in parcels) and not self._open_cases(order_id):
                await self._wait(self._settings.delays.confirm_receipt)
                if self._observer.status(order_id) == OrderStatus.AWAITING_RECEIPT and not self._open_cases(
                    order_id
                ):
                    await self._control(
                        "complete", "POST", f"/sim/orders/{order_id}/complete", refusal_ok=True
                    )
            await self._observer.next_look()

    def _refundable(self, order_id: str, product_id: str, sku_id: str) -> int:
        doc = self._observer.order(order_id) or {}
        for product in doc.get("order_detail", {}).get("product_infos", []):
            if (str(product["product_id"]), str(product["sku_id"])) == (product_id, sku_id):
                return (
                    int(product["sku_cnt"])
                    - int(product.get("on_aftersale_sku_cnt", 0))
                    - int(product.get("finish_aftersale_sku_cnt", 0))
                )
        return 0

    def _open_cases(self, order_id: str) -> bool:
        return any(
            str(c["order_id"]) == order_id and str(c["status"]) not in FINAL_CASE_STATUSES
            for c in self._observer.cases.values()
        )

    # --- plumbing ---------------------------------------------------------------------------------

    def _new_order(self, planned: PlannedOrder) -> dict[str, Any]:
        name, province, city, county, detail = BUYERS[planned.buyer % len(BUYERS)]
        return {
            "appid": planned.shop.appid,
            "paid": False,
            "address": {
                "user_name": name,
                "province_name": province,
                "city_name": city,
                "county_name": county,
                "detail_info": detail,
                "tel_number": f"138{planned.buyer:08d}"[:11],
            },
            "products": [
                {
                    "product_id": line.sku.product_id,
                    "sku_id": line.sku.sku_id,
                    "sku_cnt": line.count,
                    "sale_price": line.sku.price_fen,
                    "title": line.sku.title,
                    "sku_code": line.sku.sku_code,
                    "sku_attrs": [{"attr_key": k, "attr_value": v} for k, v in line.sku.attrs],
                }
                for line in planned.lines
            ],
        }

    def _step(self, trace: OrderTrace, name: str) -> None:
        trace.steps.append(name)
        self.counts[name] += 1

    async def _sleep_until(self, offset_s: float) -> None:
        delay = self._started + offset_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _wait(self, delay: Delay) -> None:
        low, high = delay.min_s, delay.max_s
        await asyncio.sleep(self._settings.scaled(low if high <= low else self._rng.uniform(low, high)))

    async def _control(
        self,
        name: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        refusal_ok: bool = False,
    ) -> Any:
        """One control call; its answer, or None when it failed (a refusal is counted by name: the order
        moved on meanwhile, e.g. it shipped before the address change)."""
        due = time.monotonic()  # before the queue: waiting for a free slot counts as latency
        try:
            async with self._in_flight:
                answer = await self._wechat.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.errors[f"{name}_{type(exc).__name__}"] += 1
            return None
        finally:
            self.latency.record_value(max(1, int((time.monotonic() - due) * 1_000_000)))
        if answer.status_code == 200:
            return answer.json()
        if refusal_ok and answer.status_code in (404, 409, 422):
            self.counts[f"{name}_refused"] += 1
        else:
            self.errors[f"{name}_{answer.status_code}"] += 1
            log.warning("sale: %s %s answered %s %s", method, path, answer.status_code, answer.text[:300])
        return None
