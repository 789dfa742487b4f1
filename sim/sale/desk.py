"""The people around the system during the sale: the shop's customer-service operator, who decides
the after-sale cases our policy leaves to a person (through aftersale's admin API, as `lvyue
aftersale approve|reject` does), and the carrier's counter that turns a parcel around when it is
asked to intercept it (through the carrier stand-in's control API)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any, Literal

import httpx

from sim.sale.observer import Observer, ParcelView
from sim.sale.settings import SaleSettings

log = logging.getLogger(__name__)

RETURNED_STATE = 6  # Kuaidi100 退回: on its way back to the sender (then 退签 when it arrives)


def operator_decision(
    case: dict[str, Any], parcels: list[ParcelView]
) -> tuple[Literal["approve", "reject"], str]:
    """What a sensible operator decides: a return or exchange only of goods the buyer received; a
    refund-only request always (the goods are stopped, back, or the shop is generous)."""
    kind = str(case.get("case_type", ""))
    units = {(str(line["product_id"]), str(line["sku_id"])) for line in case.get("lines", [])}
    received = any(p.delivered and units & set(p.units) for p in parcels)
    if kind in ("RETURN", "EXCHANGE") and not received:
        return "reject", "买家未收到该商品，请申请仅退款"
    return "approve", "同意售后"


class Desk:
    def __init__(
        self,
        settings: SaleSettings,
        *,
        aftersale: httpx.AsyncClient,
        carriers: httpx.AsyncClient,
        observer: Observer,
    ) -> None:
        self._settings = settings
        self._aftersale = aftersale
        self._carriers = carriers
        self._observer = observer
        self._rng = random.Random(f"desk|{settings.seed}")
        self._seen: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()

    async def run(self) -> None:
        try:
            while True:
                try:
                    for state in ("awaiting_operator", "intercepting"):
                        answer = await self._aftersale.get("/admin/v1/cases", params={"state": state})
                        answer.raise_for_status()
                        for case in answer.json()["items"]:
                            key = (state, str(case["case_id"]))
                            if key not in self._seen:
                                self._seen.add(key)
                                work = (
                                    self._decide(case)
                                    if state == "awaiting_operator"
                                    else self._intercept(case)
                                )
                                task = asyncio.create_task(work)
                                self._tasks.add(task)
                                task.add_done_callback(self._tasks.discard)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.counts["errors"] += 1
                    log.warning("sale desk: a look failed (%r)", exc)
                await asyncio.sleep(self._settings.poll_interval_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _delay(self, low: float, high: float) -> float:
        return self._settings.scaled(low if high <= low else self._rng.uniform(low, high))

    async def _decide(self, case: dict[str, Any]) -> None:
        delay = self._settings.operator.decide_delay
        await asyncio.sleep(self._delay(delay.min_s, delay.max_s))
        case_id = str(case["case_id"])
        try:
            current = await self._aftersale.get(f"/admin/v1/cases/{case_id}")
            current.raise_for_status()
            case = current.json()
            if case["state"] != "awaiting_operator":
                self.counts["decided_meanwhile"] += 1
                self._seen.discard(("awaiting_operator", case_id))  # it may come back to a person later
                return
            decision, reason = operator_decision(case, self._observer.parcels(str(case["order_id"])))
            answer = await self._aftersale.post(
                f"/admin/v1/cases/{case_id}/{decision}", json={"reason": reason}
            )
            self.counts[
                f"{decision}_{case['case_type'].lower()}" if answer.status_code == 200 else "refused"
            ] += 1
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.counts["errors"] += 1
            log.warning("sale desk: deciding %s failed (%r)", case_id, exc)
        finally:
            # A case can need a person again (e.g. a refund whose interception came too late).
            self._seen.discard(("awaiting_operator", case_id))

    async def _intercept(self, case: dict[str, Any]) -> None:
        """The carrier turns the case's parcels around, unless they have already arrived."""
        delay = self._settings.operator.intercept_delay
        await asyncio.sleep(self._delay(delay.min_s, delay.max_s))
        units = {(str(line["product_id"]), str(line["sku_id"])) for line in case.get("lines", [])}
        parcels = [p for p in self._observer.parcels(str(case["order_id"])) if units & set(p.units)]
        for parcel in parcels:
            try:
                known = await self._carriers.get(f"/sim/waybills/{parcel.waybill_id}")
                if known.status_code != 200 or (known.json().get("tracking") or {}).get("finished", True):
                    self.counts["intercept_too_late"] += 1
                    continue
                forced = await self._carriers.post(
                    f"/sim/waybills/{parcel.waybill_id}/state",
                    json={"state": RETURNED_STATE, "context": "应寄件人要求拦截，快件退回"},
                )
                self.counts["intercepted" if forced.status_code == 200 else "intercept_refused"] += 1
            except (httpx.HTTPError, ValueError) as exc:
                self.counts["errors"] += 1
                log.warning("sale desk: intercepting %s failed (%r)", parcel.waybill_id, exc)
                self._seen.discard(("intercepting", str(case["case_id"])))  # the next look tries again
