"""Logistics over HTTP: carrier tracking callbacks (Kuaidi100, Kdniao), answered in each carrier's
reply format, and the internal API dispatch calls for waybills and labels."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter

from services.logistics.domain.tracking import state_of
from services.logistics.handlers import Logistics
from services.logistics.labels import render_batch, render_label
from services.logistics.waybills import CarrierRefused, WaybillIssuer
from shared.api.logistics import INTERNAL_PREFIX, LogisticsErrorCode, WaybillIssueRequest
from shared.api.supplier import WaybillResponse
from shared.carriers import kdniao, kuaidi100
from shared.carriers.codes import UnknownCarrierError, delivery_id_for_kdniao, delivery_id_for_kuaidi100
from shared.carriers.errors import CarrierFormatError, FormatErrorCode
from shared.events.logistics import TraceEntry, TrackingSource, TrackingState
from shared.listeners import ServiceCaller
from shared.settings import LogisticsSettings
from shared.wechat.client import WeChatApiError

log = logging.getLogger(__name__)

CALLBACKS = Counter(
    "lvyue_logistics_carrier_callbacks_total",
    "Carrier tracking callbacks, by carrier and outcome.",
    ["carrier", "outcome"],
)


@dataclass
class LogisticsApi:
    settings: LogisticsSettings
    logistics: Logistics
    issuer: WaybillIssuer


async def _api(request: Request) -> LogisticsApi:  # async: no thread-pool hop per request
    api: LogisticsApi = request.app.state.logistics_api
    return api


Api = Annotated[LogisticsApi, Depends(_api)]
CALLBACKS_PREFIX = "/callbacks"
callbacks = APIRouter(prefix=CALLBACKS_PREFIX, tags=["carrier callbacks"])
# Other services only: on the private listener, with the service credential.
internal = APIRouter(prefix=INTERNAL_PREFIX, tags=["internal"], dependencies=[ServiceCaller])


def _beijing(text: str) -> datetime:
    return datetime.strptime(text, kdniao.TIME_FORMAT).replace(tzinfo=kdniao.BEIJING)


@callbacks.post("/kuaidi100", summary="Kuaidi100 tracking push (param + sign)")
async def kuaidi100_callback(request: Request, api: Api) -> JSONResponse:
    body = await request.body()
    try:
        callback = kuaidi100.parse_callback(body, salt=api.settings.kuaidi100_salt.get_secret_value())
        result = callback.param.last_result
        carrier_code = delivery_id_for_kuaidi100(result.com)
    except (CarrierFormatError, UnknownCarrierError) as exc:
        outcome = exc.code.value if isinstance(exc, CarrierFormatError) else "unknown_carrier"
        CALLBACKS.labels("kuaidi100", outcome).inc()
        status = (
            401
            if isinstance(exc, CarrierFormatError) and exc.code == FormatErrorCode.SIGNATURE_MISMATCH
            else 400
        )
        return JSONResponse(kuaidi100.failure_reply(str(exc)[:200]), status_code=status)
    newest_state = state_of(TrackingSource.KUAIDI100, int(result.state))
    entries = []
    for index, node in enumerate(result.data):  # newest first
        state = None
        if node.status_code is not None and node.status_code.lstrip("-").isdigit():
            state = state_of(TrackingSource.KUAIDI100, int(node.status_code))
        if index == 0 and newest_state is not None:
            state = newest_state
        entries.append(
            TraceEntry(
                at=_beijing(node.ftime or node.time),
                text=node.context,
                state=state or TrackingState.IN_TRANSIT,
                source=TrackingSource.KUAIDI100,
            )
        )
    known = await api.logistics.track(
        carrier_code,
        result.nu,
        entries,
        source="kuaidi100",
        cause="kuaidi100:" + hashlib.sha1(callback.raw_param.encode()).hexdigest(),
    )
    CALLBACKS.labels("kuaidi100", "applied" if known else "unknown_parcel").inc()
    return JSONResponse(kuaidi100.success_reply())


@callbacks.post("/kdniao", summary="Kdniao tracking push (RequestData + DataSign)")
async def kdniao_callback(request: Request, api: Api) -> JSONResponse:
    body = await request.body()
    business_id = api.settings.kdniao_business_id
    try:
        push = kdniao.parse_push(body, app_key=api.settings.kdniao_app_key.get_secret_value())
    except CarrierFormatError as exc:
        CALLBACKS.labels("kdniao", exc.code.value).inc()
        status = 401 if exc.code == FormatErrorCode.SIGNATURE_MISMATCH else 400
        return JSONResponse(
            kdniao.push_reply(business_id, success=False, reason=str(exc)[:200]), status_code=status
        )
    for item in push.request.data:
        try:
            carrier_code = delivery_id_for_kdniao(item.shipper_code)
        except UnknownCarrierError:
            CALLBACKS.labels("kdniao", "unknown_carrier").inc()
            continue
        newest_state = state_of(TrackingSource.KDNIAO, int(item.state))
        entries = [
            TraceEntry(
                at=_beijing(trace.accept_time),
                text=trace.accept_station,
                state=(
                    newest_state
                    if index == len(item.traces) - 1 and newest_state
                    else TrackingState.IN_TRANSIT
                ),
                source=TrackingSource.KDNIAO,
            )
            for index, trace in enumerate(item.traces)  # oldest first
        ]
        known = await api.logistics.track(
            carrier_code,
            item.logistic_code,
            entries,
            source="kdniao",
            cause="kdniao:" + hashlib.sha1(push.form.request_data.encode()).hexdigest() + item.logistic_code,
        )
        CALLBACKS.labels("kdniao", "applied" if known else "unknown_parcel").inc()
    return JSONResponse(kdniao.push_reply(business_id))


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


@internal.post("/waybills", response_model=WaybillResponse, summary="Waybill numbers and labels for parcels")
async def issue_waybills(request: WaybillIssueRequest, api: Api) -> Any:
    try:
        return await api.issuer.issue(request)
    except UnknownCarrierError as exc:
        return _error(422, LogisticsErrorCode.UNKNOWN_CARRIER, str(exc))
    except CarrierRefused as exc:
        return _error(409, LogisticsErrorCode.CARRIER_REFUSED, f"the carrier allocated no number: {exc}")
    except WeChatApiError as exc:
        return _error(503, "wechat_unavailable", str(exc))


@internal.get("/labels/{carrier_code}/{waybill_no}.pdf", summary="One parcel's label, 100x150 mm PDF")
async def label(
    api: Api,
    carrier_code: Annotated[str, Path(max_length=32)],
    waybill_no: Annotated[str, Path(max_length=64)],
    dispatch_id: Annotated[
        str | None, Query(description="the label must belong to this dispatch order")
    ] = None,
) -> Response:
    data = api.issuer.label_of(carrier_code, waybill_no)
    if data is None or (dispatch_id is not None and data.dispatch_id != dispatch_id):
        return _error(404, LogisticsErrorCode.NO_SUCH_WAYBILL, f"no label for {carrier_code} {waybill_no}")
    return Response(render_label(data), media_type="application/pdf")


@internal.post("/labels/batch.pdf", summary="Many labels in one PDF, a page each")
async def label_batch(
    api: Api, waybills: Annotated[list[tuple[str, str]], Body(min_length=1, max_length=500)]
) -> Response:
    labels = []
    for carrier_code, waybill_no in waybills:
        data = api.issuer.label_of(carrier_code, waybill_no)
        if data is None:
            return _error(
                404, LogisticsErrorCode.NO_SUCH_WAYBILL, f"no label for {carrier_code} {waybill_no}"
            )
        labels.append(data)
    return Response(render_batch(labels), media_type="application/pdf")
