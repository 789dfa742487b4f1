"""The carrier aggregator (Kuaidi100-style): waybill numbers on the merchant's carrier accounts, and
tracking subscriptions whose pushes come back to `/callbacks/kuaidi100`."""

from __future__ import annotations

import logging
import time

import httpx
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from services.logistics.waybills import CarrierRefused
from shared.carriers import kuaidi100
from shared.carriers.codes import kuaidi100_company
from shared.carriers.kuaidi100_label import (
    LabelCancelParam,
    LabelMethod,
    LabelOrderParam,
    LabelReply,
    ManInfo,
    label_form,
)
from shared.events.dispatch import ShippingAddress
from shared.settings import LogisticsSettings

log = logging.getLogger(__name__)

AGGREGATOR_CALLS = Counter(
    "lvyue_logistics_aggregator_calls_total",
    "Carrier aggregator calls, by method and returnCode.",
    ["method", "code"],
)


class AggregatorUnavailable(Exception):
    """Transport failure or 5xx: retried, then the caller answers 503."""


def _man(address: ShippingAddress) -> ManInfo:
    return ManInfo(
        name=address.name,
        mobile=address.phone,
        province=address.province,
        city=address.city,
        district=address.county,
        addr=address.detail,
        print_addr=f"{address.province}{address.city}{address.county}{address.detail}",
    )


class AggregatorClient:
    def __init__(self, http: httpx.AsyncClient, settings: LogisticsSettings) -> None:
        self._http = http
        self._settings = settings

    async def _post(self, method: LabelMethod, param: LabelOrderParam | LabelCancelParam) -> LabelReply:
        form = label_form(
            method,
            param,
            key=self._settings.aggregator_key.get_secret_value(),
            secret=self._settings.aggregator_secret.get_secret_value(),
            t=str(int(time.time() * 1000)),
        )
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential_jitter(multiplier=0.2, max=2),
            retry=retry_if_exception_type(AggregatorUnavailable),
            reraise=True,
        ):
            with attempt:
                try:
                    answer = await self._http.post(f"{self._settings.aggregator_url}/label/order", data=form)
                except httpx.HTTPError as exc:
                    raise AggregatorUnavailable(str(exc)) from exc
                if answer.status_code >= 500:
                    raise AggregatorUnavailable(f"HTTP {answer.status_code}")
        reply = LabelReply.model_validate(answer.json())
        AGGREGATOR_CALLS.labels(method, reply.return_code).inc()
        return reply

    async def issue(
        self,
        *,
        carrier_code: str,
        sender: ShippingAddress,
        receiver: ShippingAddress,
        goods: str,
        count: int,
        weight_grams: int | None,
        reference: str,
    ) -> str:
        param = LabelOrderParam(
            kuaidicom=kuaidi100_company(carrier_code),
            partner_id=self._settings.aggregator_partner_id,
            rec_man=_man(receiver),
            send_man=_man(sender),
            cargo=goods,
            count=count,
            weight=None if weight_grams is None else weight_grams / 1000,
            order_id=reference[:64],
        )
        reply = await self._post(LabelMethod.ORDER, param)
        if not reply.result or reply.data is None:
            raise CarrierRefused(f"{reply.return_code} {reply.message}")
        return reply.data.kuaidinum

    async def cancel(self, *, carrier_code: str, waybill_no: str) -> None:
        param = LabelCancelParam(
            kuaidicom=kuaidi100_company(carrier_code),
            kuaidinum=waybill_no,
            partner_id=self._settings.aggregator_partner_id,
            reason="order cancelled",
        )
        reply = await self._post(LabelMethod.CANCEL, param)
        if not reply.result:
            log.warning("aggregator refused to cancel %s %s: %s", carrier_code, waybill_no, reply.message)


class CarrierSubscriber:
    """Kuaidi100 tracking subscriptions (poll), pushed back to our callback with our salt."""

    def __init__(self, http: httpx.AsyncClient, settings: LogisticsSettings) -> None:
        self._http = http
        self._settings = settings

    async def subscribe(self, carrier_code: str, waybill_no: str) -> None:
        param = kuaidi100.SubscribeParam(
            company=kuaidi100_company(carrier_code),
            number=waybill_no,
            key=self._settings.aggregator_key.get_secret_value(),
            parameters=kuaidi100.SubscribeParameters(
                callbackurl=f"{self._settings.public_url}/callbacks/kuaidi100",
                salt=self._settings.kuaidi100_salt.get_secret_value(),
                resultv2="1",
            ),
        )
        try:
            answer = await self._http.post(
                f"{self._settings.aggregator_url}/poll", data=kuaidi100.subscribe_form(param)
            )
            reply = kuaidi100.SubscribeReply.model_validate(answer.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise AggregatorUnavailable(f"subscribe {waybill_no}: {exc}") from exc
        AGGREGATOR_CALLS.labels("subscribe", reply.return_code).inc()
        if reply.code is kuaidi100.SubscribeReturnCode.SERVER_ERROR:  # nothing subscribed: try again
            raise AggregatorUnavailable(f"subscribe {waybill_no}: {reply.return_code} {reply.message}")
        if reply.code not in (kuaidi100.SubscribeReturnCode.OK, kuaidi100.SubscribeReturnCode.DUPLICATE):
            log.warning("tracking subscription of %s %s refused: %s", carrier_code, waybill_no, reply.message)
