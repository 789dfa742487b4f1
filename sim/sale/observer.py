"""What buyers and the shop's desk can see, as the stand-ins record it: WeChat's orders and after-sale
cases, and each parcel's tracking at the carrier. One loop looks every `poll_interval_s` (only at
what changed since the last look, for WeChat) and wakes everyone waiting for news."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from shared.carriers.kuaidi100 import TrackingState
from shared.wechat.api import OrderStatus
from sim.wechat.app import SIM_NOW_HEADER

log = logging.getLogger(__name__)

FINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.COMPLETED, OrderStatus.CANCELLED_AFTER_AFTERSALE, OrderStatus.CANCELLED_UNPAID}
)
FINAL_CASE_STATUSES = frozenset(
    {
        "USER_CANCELD",
        "MERCHANT_REJECT_REFUND",
        "MERCHANT_REJECT_RETURN",
        "RETURN_CLOSED",
        "MERCHANT_REFUND_SUCCESS",
        "MERCHANT_RETURN_SUCCESS",
        "MERCHANT_REJECT_EXCHANGE",
        "MERCHANT_EXCHANGE_SUCCESS",
    }
)
DELIVERED = int(TrackingState.SIGNED)
RETURNED_TO_SENDER = int(TrackingState.RETURN_SIGNED)


@dataclass(frozen=True)
class ParcelView:
    waybill_id: str
    delivery_id: str
    units: dict[tuple[str, str], int]  # (product_id, sku_id) -> units in the parcel
    state: int | None  # the carrier's latest Kuaidi100 state, None before the first scan
    finished: bool

    @property
    def delivered(self) -> bool:
        return self.finished and self.state == DELIVERED

    @property
    def returned(self) -> bool:
        return self.finished and self.state != DELIVERED


def parcels_of(order: dict[str, Any], waybills: dict[str, dict[str, Any]]) -> list[ParcelView]:
    """The order's parcels as WeChat knows them (delivery/send), with their tracking."""
    views: list[ParcelView] = []
    for parcel in order.get("order_detail", {}).get("delivery_info", {}).get("delivery_product_info", []):
        number = str(parcel.get("waybill_id", ""))
        units: dict[tuple[str, str], int] = {}
        for line in parcel.get("product_infos", []):
            key = (str(line["product_id"]), str(line["sku_id"]))
            units[key] = units.get(key, 0) + int(line["product_cnt"])
        tracking = (waybills.get(number) or {}).get("tracking") or {}
        views.append(
            ParcelView(
                waybill_id=number,
                delivery_id=str(parcel.get("delivery_id", "")),
                units=units,
                state=tracking.get("state"),
                finished=bool(tracking.get("finished", False)),
            )
        )
    return views


class Observer:
    def __init__(
        self,
        wechat: httpx.AsyncClient,
        carriers: httpx.AsyncClient,
        appids: Iterable[str],
        *,
        poll_interval_s: float,
    ) -> None:
        self._wechat = wechat
        self._carriers = carriers
        self._appids = list(appids)
        self._interval = poll_interval_s
        self.orders: dict[str, dict[str, Any]] = {}
        self.order_appid: dict[str, str] = {}
        self.cases: dict[str, dict[str, Any]] = {}
        self.waybills: dict[str, dict[str, Any]] = {}
        self.looks = 0
        self.errors = 0
        self.changed_at = time.monotonic()  # when a look last found an order, case or parcel changed
        self._since: dict[str, int] = {}
        self._cases_since = 0
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        while True:
            try:
                await self.look()
            except (httpx.HTTPError, ValueError) as exc:
                self.errors += 1
                log.warning("sale observer: a look failed (%r)", exc)
            await asyncio.sleep(self._interval)

    async def look(self) -> None:
        changed = False
        for appid in self._appids:
            since = self._since.get(appid)
            params: dict[str, Any] = {"appid": appid}
            if since is not None:
                params["since"] = since - 1  # update_time is in whole seconds: look a second back
            answer = await self._wechat.get("/sim/orders", params=params)
            answer.raise_for_status()
            for doc in answer.json():
                order_id = str(doc["order_id"])
                changed |= self.orders.get(order_id) != doc
                self.orders[order_id] = doc
                self.order_appid[order_id] = appid
            # The stand-in's clock, not the newest update_time: an order changed several times in a
            # second runs ahead of the clock, and marking by it skipped other orders' later changes.
            self._since[appid] = int(answer.headers[SIM_NOW_HEADER])
        params = {"since": self._cases_since - 1} if self._cases_since else {}
        answer = await self._wechat.get("/sim/aftersales", params=params)
        answer.raise_for_status()
        for doc in answer.json():
            case_id = str(doc["after_sale_order_id"])
            changed |= self.cases.get(case_id) != doc
            self.cases[case_id] = doc
        self._cases_since = int(answer.headers[SIM_NOW_HEADER])
        unfinished = [
            {"number": number, "delivery_id": delivery_id}
            for number, delivery_id in self._unfinished_parcels()
        ]
        if unfinished:  # those only: a finished parcel's tracking does not change
            answer = await self._carriers.post("/sim/waybills/lookup", json={"waybills": unfinished})
            answer.raise_for_status()
            for waybill in answer.json():
                number = str(waybill["number"])
                changed |= self.waybills.get(number) != waybill
                self.waybills[number] = waybill
        if changed:
            self.changed_at = time.monotonic()
        self.looks += 1
        async with self._changed:
            self._changed.notify_all()

    def _unfinished_parcels(self) -> Iterable[tuple[str, str]]:
        """(waybill number, carrier code) of each parcel WeChat was told of whose journey is not over."""
        for doc in self.orders.values():
            for parcel in parcels_of(doc, self.waybills):
                if not parcel.finished and parcel.waybill_id and parcel.delivery_id:
                    yield parcel.waybill_id, parcel.delivery_id

    async def next_look(self) -> None:
        """Until the next look has been taken."""
        async with self._changed:
            await self._changed.wait()

    def order(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    def status(self, order_id: str) -> int | None:
        doc = self.orders.get(order_id)
        return None if doc is None else int(doc["status"])

    def parcels(self, order_id: str) -> list[ParcelView]:
        doc = self.orders.get(order_id)
        return [] if doc is None else parcels_of(doc, self.waybills)

    def case_status(self, case_id: str) -> str | None:
        doc = self.cases.get(case_id)
        return None if doc is None else str(doc["status"])
