"""The stand-in's HTTP face: the aggregator APIs with their real paths, field names and reply shapes
(Kuaidi100 /label/order and /poll, Kdniao /api/dist; HTTP 200 with a result code even on errors), and
the control API under /sim for tests and the sale simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Scope

from shared.carriers import kdniao, kuaidi100
from shared.carriers.codes import Carrier, UnknownCarrierError, by_delivery_id, by_kdniao, by_kuaidi100
from shared.carriers.errors import CarrierFormatError
from shared.carriers.forms import parse_form
from shared.carriers.kuaidi100 import SubscribeReturnCode
from shared.carriers.kuaidi100_label import (
    LabelCancelParam,
    LabelMethod,
    LabelOrderData,
    LabelOrderParam,
    LabelReturnCode,
    ManInfo,
    label_reply,
    parse_label_param,
    parse_label_request,
    verify_label_sign,
)
from sim.asgi import JsonCall, JsonCallsFastPath, StandInApp, header
from sim.carriers import numbers
from sim.carriers.pusher import Pusher
from sim.carriers.schemas import (
    CallOut,
    FaultsIn,
    ForceStateIn,
    PushOut,
    ScanOut,
    WaybillLookupIn,
    WaybillOut,
    issued_out,
    push_out,
    scan_out,
    tracking_out,
)
from sim.carriers.settings import CarrierSimSettings, FaultShares, KdniaoAccount
from sim.carriers.state import (
    CarrierWorld,
    Channel,
    IssuedWaybill,
    KdniaoSubscription,
    Kuaidi100Subscription,
    Parcel,
    PushStatus,
)
from sim.carriers.tracker import Tracker

KDNIAO_PATHS = ("/api/dist", "/kdniao/subscribe")


class _LabelRefusal(Exception):
    def __init__(self, code: LabelReturnCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _request_fields(content_type: str, raw: bytes) -> dict[str, Any]:
    """A form body, or a JSON object with the same fields (both reach the same handler)."""
    if content_type.startswith("application/json"):
        try:
            document = json.loads(raw)
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}
    try:
        return dict(parse_form(raw))
    except CarrierFormatError:
        return {}


def _has_contact(man: ManInfo) -> bool:
    has_address = bool(man.print_addr) or all((man.province, man.city, man.district, man.addr))
    return bool(man.mobile or man.tel) and has_address


class Aggregator:
    """The carrier-facing handlers (pure of HTTP: fields in, reply dict out)."""

    def __init__(self, world: CarrierWorld, settings: CarrierSimSettings, tracker: Tracker) -> None:
        self.world = world
        self.settings = settings
        self.tracker = tracker

    # ---- Kuaidi100 e-waybill --------------------------------------------------------------------

    def label(self, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._label(fields)
        except _LabelRefusal as refusal:
            return label_reply(refusal.code, refusal.message)

    def _label(self, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            request = parse_label_request(fields)
        except CarrierFormatError as exc:
            raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, f"参数错误: {exc.detail}") from exc
        secret = self.settings.kuaidi100_accounts.get(request.key)
        if secret is None:
            raise _LabelRefusal(LabelReturnCode.BAD_KEY, "key不存在或已过期")
        if not verify_label_sign(request.param, request.t, request.key, secret, request.sign):
            raise _LabelRefusal(LabelReturnCode.SIGN_FAILED, "验证签名失败")
        try:
            match request.method:
                case LabelMethod.ORDER:
                    return self._order(request.key, parse_label_param(request.param, LabelOrderParam))
                case LabelMethod.CANCEL:
                    return self._cancel(parse_label_param(request.param, LabelCancelParam))
        except CarrierFormatError as exc:
            raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, f"参数错误: {exc.detail}") from exc
        raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, f"不支持的method: {request.method}")

    def _carrier(self, kuaidicom: str) -> Carrier:
        try:
            return by_kuaidi100(kuaidicom)
        except UnknownCarrierError as exc:
            raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, f"不支持的快递公司: {kuaidicom}") from exc

    def _mint(self, carrier: Carrier) -> str:
        while True:
            number = numbers.mint(carrier, self.world.rng)
            if number not in self.world.waybills:
                return number

    def _order(self, key: str, param: LabelOrderParam) -> dict[str, Any]:
        """Mint a new number on every call (like the real thing: callers must de-duplicate)."""
        carrier = self._carrier(param.kuaidicom)
        for role, man in (("收件人", param.rec_man), ("寄件人", param.send_man)):
            if not _has_contact(man):
                raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, f"{role}信息不完整")
        now = self.world.clock()
        number = self._mint(carrier)
        task_id = f"{self.world.rng.getrandbits(128):032X}"
        self.world.waybills[number] = IssuedWaybill(
            number=number,
            carrier=carrier,
            key=key,
            task_id=task_id,
            order_id=param.order_id,
            issued_at=now,
            param=param.model_dump(by_alias=True, exclude_none=True),
        )
        children: list[str] = []
        if param.need_child == "1":
            for _ in range(param.count - 1):
                child = self._mint(carrier)
                self.world.waybills[child] = IssuedWaybill(
                    child, carrier, key, task_id, param.order_id, now, {"parent": number}
                )
                children.append(child)
        if param.need_subscribe and param.poll_callback_url:
            self.tracker.subscribe_kuaidi100(
                carrier,
                number,
                Kuaidi100Subscription(key, param.poll_callback_url, param.salt, param.resultv2, now),
            )
        parcel = self.world.parcels.get((carrier.delivery_id, number))
        route = parcel.route if parcel is not None else None
        data = LabelOrderData(
            task_id=task_id,
            kuaidinum=number,
            child_num=",".join(children) or None,
            bulkpen=f"{self.world.rng.randint(100, 999)}-{self.world.rng.randint(10, 99)}",
            org_name=route.origin_station if route else None,
            dest_name=route.dest_station if route else None,
        )
        return label_reply(LabelReturnCode.OK, "success", data)

    def _cancel(self, param: LabelCancelParam) -> dict[str, Any]:
        carrier = self._carrier(param.kuaidicom)
        waybill = self.world.waybills.get(param.kuaidinum)
        if waybill is None or waybill.carrier != carrier:
            raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, "运单不存在")
        if waybill.cancelled_at is not None:
            raise _LabelRefusal(LabelReturnCode.BAD_REQUEST, "运单已取消")
        waybill.cancelled_at = self.world.clock()
        return label_reply(LabelReturnCode.OK, "success")

    # ---- Kuaidi100 subscription -----------------------------------------------------------------

    def poll(self, body: bytes) -> dict[str, Any]:
        code = SubscribeReturnCode
        try:
            fields = parse_form(body)
            param = kuaidi100.parse_subscribe(body)
        except CarrierFormatError as exc:
            return kuaidi100.subscribe_reply(code.BAD_DATA, f"订阅数据错误: {exc.detail}")
        if fields.get("schema", "json") != "json":
            return kuaidi100.subscribe_reply(code.BAD_DATA, "schema只支持json")
        if param.key not in self.settings.kuaidi100_accounts:
            return kuaidi100.subscribe_reply(code.BAD_KEY)
        try:
            carrier = by_kuaidi100(param.company)
        except UnknownCarrierError:
            return kuaidi100.subscribe_reply(code.BAD_DATA, f"不支持的快递公司: {param.company}")
        number = param.number.strip()
        callback = param.parameters.callbackurl.strip()
        if not number:
            return kuaidi100.subscribe_reply(code.BAD_DATA, "单号为空")
        if not callback.startswith(("http://", "https://")):
            return kuaidi100.subscribe_reply(code.BAD_DATA, "错误的回调地址")
        if self.world.faults.subscribe_server_errors > 0:
            left = self.world.faults.subscribe_server_errors - 1
            self.world.faults = self.world.faults.model_copy(update={"subscribe_server_errors": left})
            return kuaidi100.subscribe_reply(code.SERVER_ERROR)
        if self.tracker.is_polling(carrier, number):
            return kuaidi100.subscribe_reply(code.DUPLICATE)
        subscription = Kuaidi100Subscription(
            key=param.key,
            callback_url=callback,
            salt=param.parameters.salt,
            resultv2=param.parameters.resultv2,
            subscribed_at=self.world.clock(),
        )
        self.tracker.subscribe_kuaidi100(carrier, number, subscription)
        return kuaidi100.subscribe_reply(code.OK)

    # ---- Kdniao subscription (RequestType 1008) -------------------------------------------------

    def kdniao_subscribe(self, body: bytes) -> dict[str, Any]:
        try:
            fields = parse_form(body)
        except CarrierFormatError as exc:
            return kdniao.subscribe_reply("", success=False, reason=exc.detail)
        ebusiness_id = fields.get("EBusinessID", "")

        def refuse(reason: str) -> dict[str, Any]:
            return kdniao.subscribe_reply(ebusiness_id, success=False, reason=reason)

        account = self.world.kdniao_accounts.get(ebusiness_id)
        if account is None:
            return refuse("EBusinessID不存在")
        if fields.get("RequestType") != kdniao.RequestType.SUBSCRIBE:
            return refuse("RequestType错误")
        raw = fields.get("RequestData", "")
        if not kdniao.verify(raw, fields.get("DataSign"), account.app_key):
            return refuse("数据签名错误")
        try:
            request = kdniao.parse_request_data(raw, kdniao.SubscribeRequestData)
            carrier = by_kdniao(request.shipper_code)
        except CarrierFormatError as exc:
            return refuse(exc.detail)
        except UnknownCarrierError:
            return refuse("不支持的快递公司")
        if not request.logistic_code.strip():
            return refuse("LogisticCode不能为空")
        subscription = KdniaoSubscription(account, request.callback, subscribed_at=self.world.clock())
        self.tracker.subscribe_kdniao(carrier, request.logistic_code.strip(), subscription)
        return kdniao.subscribe_reply(ebusiness_id)


CarrierCall = Callable[[str, bytes], dict[str, Any]]  # (content type, raw body) -> reply, call recorded


def carrier_calls(aggregator: Aggregator) -> dict[str, CarrierCall]:
    """The aggregator APIs, by path: each answers and records the call."""
    world = aggregator.world

    def label_order(content_type: str, raw: bytes) -> dict[str, Any]:
        fields = _request_fields(content_type, raw)
        reply = aggregator.label(fields)
        world.record_call("POST", "/label/order", fields, reply)
        return reply

    def form_call(path: str, handle: Callable[[bytes], dict[str, Any]]) -> CarrierCall:
        def call(content_type: str, raw: bytes) -> dict[str, Any]:
            reply = handle(raw)
            world.record_call("POST", path, _safe_form(raw), reply)
            return reply

        return call

    calls = {"/label/order": label_order, "/poll": form_call("/poll", aggregator.poll)}
    calls.update((path, form_call(path, aggregator.kdniao_subscribe)) for path in KDNIAO_PATHS)
    return calls


def carrier_router(calls: dict[str, CarrierCall]) -> APIRouter:
    router = APIRouter(tags=["aggregator APIs"])

    def endpoint(call: CarrierCall) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def answer(request: Request) -> JSONResponse:
            return JSONResponse(call(request.headers.get("content-type", ""), await request.body()))

        return answer

    for path, call in calls.items():
        router.add_api_route(path, endpoint(call), methods=["POST"], response_class=JSONResponse)
    return router


class CarrierCallsFastPath(JsonCallsFastPath):
    """The aggregator APIs answered in front of FastAPI, by the functions its routes call: logistics
    subscribes every parcel's tracking (/poll) at the sale's rate."""

    def __init__(self, app: ASGIApp, calls: dict[str, CarrierCall]) -> None:
        super().__init__(app, {path: _from_scope(call) for path, call in calls.items()})


def _from_scope(call: CarrierCall) -> JsonCall:
    async def answer(scope: Scope, raw: bytes) -> dict[str, Any]:
        return call(header(scope, b"content-type"), raw)

    return answer


def _safe_form(body: bytes) -> dict[str, Any]:
    try:
        return dict(parse_form(body))
    except CarrierFormatError:
        return {"raw": body[:2000].decode(errors="replace")}


# ---- the control API (not the carriers') ---------------------------------------------------------


def control_router(world: CarrierWorld, tracker: Tracker) -> APIRouter:
    router = APIRouter(prefix="/sim", tags=["stand-in control"])

    def parcel_of(number: str, company: str | None) -> Parcel:
        parcels = world.find_parcels(number)
        if company:
            try:
                delivery_id = _carrier_any(company).delivery_id
            except UnknownCarrierError as exc:
                raise HTTPException(422, {"code": "unknown_carrier", "reason": str(exc)}) from exc
            parcels = [p for p in parcels if p.carrier.delivery_id == delivery_id]
        if not parcels:
            raise HTTPException(404, {"code": "not_tracked", "reason": f"no subscription for {number}"})
        return parcels[0]

    def waybill_out(number: str, carrier: Carrier) -> WaybillOut:
        issued = world.waybills.get(number)
        parcel = world.parcels.get((carrier.delivery_id, number))
        return WaybillOut(
            number=number,
            delivery_id=carrier.delivery_id,
            kuaidi100=carrier.kuaidi100,
            kdniao=carrier.kdniao,
            name=carrier.name,
            issued=issued_out(issued) if issued is not None and issued.carrier == carrier else None,
            tracking=tracking_out(parcel) if parcel is not None else None,
        )

    def all_waybills() -> list[tuple[str, Carrier]]:
        seen: dict[tuple[str, str], Carrier] = {}
        for waybill in world.waybills.values():
            seen[(waybill.carrier.delivery_id, waybill.number)] = waybill.carrier
        for parcel in world.parcels.values():
            seen[parcel.key] = parcel.carrier
        return [(number, carrier) for (_, number), carrier in seen.items()]

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/waybills", response_model=list[WaybillOut])
    async def list_waybills() -> list[WaybillOut]:
        return [waybill_out(number, carrier) for number, carrier in all_waybills()]

    @router.post("/waybills/lookup", response_model=list[WaybillOut])
    async def look_up_waybills(body: WaybillLookupIn) -> list[WaybillOut]:
        """These waybills only (unknown ones left out): a watcher of unfinished parcels need not read
        every waybill ever issued."""
        found: list[WaybillOut] = []
        for ref in body.waybills:
            try:
                carrier = by_delivery_id(ref.delivery_id)
            except UnknownCarrierError:
                continue
            issued = world.waybills.get(ref.number)
            if (issued is not None and issued.carrier == carrier) or (
                (carrier.delivery_id, ref.number) in world.parcels
            ):
                found.append(waybill_out(ref.number, carrier))
        return found

    @router.get("/waybills/{number}", response_model=WaybillOut)
    async def get_waybill(number: str, company: Annotated[str | None, Query()] = None) -> WaybillOut:
        for found, carrier in all_waybills():
            if found == number and (company is None or carrier == _carrier_any(company)):
                return waybill_out(number, carrier)
        raise HTTPException(404, {"code": "unknown_waybill", "reason": number})

    @router.get("/waybills/{number}/pushes", response_model=list[PushOut])
    async def waybill_pushes(number: str) -> list[PushOut]:
        return [push_out(p) for p in world.find_pushes(number=number)]

    @router.post("/waybills/{number}/advance", response_model=ScanOut | None)
    async def advance(number: str, company: Annotated[str | None, Query()] = None) -> ScanOut | None:
        """The next planned scan happens now (null when the journey is over)."""
        event = tracker.advance(parcel_of(number, company))
        return scan_out(event) if event else None

    @router.post("/waybills/{number}/state", response_model=ScanOut)
    async def force_state(
        number: str, body: ForceStateIn, company: Annotated[str | None, Query()] = None
    ) -> ScanOut:
        return scan_out(tracker.force(parcel_of(number, company), body.state, body.context))

    @router.get("/pushes", response_model=list[PushOut])
    async def pushes(
        number: Annotated[str | None, Query()] = None,
        channel: Annotated[Channel | None, Query()] = None,
        status: Annotated[PushStatus | None, Query()] = None,
    ) -> list[PushOut]:
        return [push_out(p) for p in world.find_pushes(number=number, channel=channel, status=status)]

    @router.get("/calls", response_model=list[CallOut])
    async def calls(path: Annotated[str | None, Query()] = None) -> list[CallOut]:
        return [
            CallOut(at=c.at, method=c.method, path=c.path, request=c.request, reply=c.reply)
            for c in world.calls
            if path is None or c.path == path
        ]

    @router.delete("/calls")
    async def clear_calls() -> dict[str, str]:
        world.calls.clear()
        return {"status": "cleared"}

    @router.get("/faults", response_model=FaultShares)
    async def get_faults() -> FaultShares:
        return world.faults

    @router.post("/faults", response_model=FaultShares)
    async def set_faults(body: FaultsIn) -> FaultShares:
        world.faults = body.apply(world.faults)
        return world.faults

    @router.get("/kdniao/accounts", response_model=list[KdniaoAccount])
    async def kdniao_accounts() -> list[KdniaoAccount]:
        return list(world.kdniao_accounts.values())

    @router.post("/kdniao/accounts", response_model=KdniaoAccount)
    async def add_kdniao_account(body: KdniaoAccount) -> KdniaoAccount:
        """What a merchant sets in Kdniao's console: its AppKey and the URL pushes go to."""
        world.kdniao_accounts[body.ebusiness_id] = body
        return body

    return router


def _carrier_any(code: str) -> Carrier:
    """A carrier named in any of the three systems (control API convenience)."""
    for lookup in (by_delivery_id, by_kuaidi100, by_kdniao):
        try:
            return lookup(code)
        except UnknownCarrierError:
            continue
    return by_delivery_id(code)  # raises with the WeChat code list


def create_app(
    world: CarrierWorld | None = None,
    settings: CarrierSimSettings | None = None,
    *,
    push_transport: httpx.AsyncBaseTransport | None = None,
) -> StandInApp:
    """The stand-in. `world` defaults to a fresh one on the real clock; `push_transport` replaces the
    network for pushes (tests mount the receiver in-process). Timelines and the pusher run with the
    lifespan."""
    settings = settings or CarrierSimSettings()
    world = world or CarrierWorld(
        seed=settings.seed, faults=settings.faults, kdniao_accounts=settings.kdniao_accounts
    )
    pusher = Pusher(world, settings, transport=push_transport)
    tracker = Tracker(world, settings, pusher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pusher.start()
        await tracker.start()
        try:
            yield
        finally:
            await tracker.stop()
            await pusher.stop()

    app = StandInApp(title="Carrier stand-in (Kuaidi100 / Kdniao)", lifespan=lifespan)
    app.state.world = world
    app.state.pusher = pusher
    app.state.tracker = tracker
    calls = carrier_calls(Aggregator(world, settings, tracker))  # for the routes and the fast path
    app.include_router(carrier_router(calls))
    app.add_fast_path(CarrierCallsFastPath, calls=calls)
    app.include_router(control_router(world, tracker))
    return app
