"""The WeChat drop-ship (代发) mirror: a consumer of the dispatch topic that assigns dispatch orders to
their supplier inside WeChat and cancels what is taken away again. The decisions are pure
(`domain/dropship.py`); this module reads the switches, calls WeChat and records what happened.

Off unless a shop turns it on (`lvyue shop dropship --shop-id ID --on`), and only for suppliers with a
WeChat supplier appid (`lvyue supplier wechat-appid`): any other event costs a header check or a cached
shop lookup, never a WeChat call. A shop turned off later still has the units it mirrored cancelled.

Each dispatch order's record is insert-only (`dispatch_dropship_mirrors`, `<dispatch id>#<revision>`):
a call is recorded before it is made, its answer after; the events (dispatch_mirrored, ..._cancelled,
..._failed) are written with the change and published once it is durable. An unclear answer (timeout,
busy) leaves the call pending: the message is retried, and the retry asks WeChat what exists
(dropship/list + dropship/get, or dropship/get for a cancel) before asking again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, ValidationError

from services.dispatch.domain import dropship as mirror_domain
from services.dispatch.domain.dropship import (
    Assign,
    Cancel,
    DropshipMirror,
    InSync,
    Reconcile,
    Units,
    Verdict,
)
from shared.events.base import Event, utc_now
from shared.events.dead_letter import DeadLetterReason
from shared.events.dispatch import (
    DISPATCH_EVENTS,
    DispatchEvent,
    DispatchOffered,
    MirrorCall,
    MirrorLine,
)
from shared.kafka.consumer import InboundMessage, PermanentFailure
from shared.kafka.producer import publish
from shared.kafka.topics import DISPATCH_DROPSHIP, DISPATCH_PROGRESS
from shared.service import ServiceRuntime
from shared.settings import DispatchSettings
from shared.versioned import VersionedProjection
from shared.wechat.api import (
    DROPSHIP_ASSIGN,
    DROPSHIP_CANCEL,
    DROPSHIP_GET,
    DROPSHIP_LIST,
    MAX_LIST_WINDOW_S,
    DropshipAssignRequest,
    DropshipAssignResponse,
    DropshipCancelRequest,
    DropshipGetResponse,
    DropshipListRequest,
    DropshipListResponse,
    DropshipPageInfo,
    DropshipProduct,
    TimeRange,
)
from shared.wechat.client import (
    AccessTokenManager,
    ShopApi,
    WeChatApiError,
    WeChatShopClient,
    WeChatUnavailableError,
    wechat_http_client,
)
from shared.wechat.shops import Shop, ShopCache, ShopRepository

log = logging.getLogger(__name__)

MIRRORS = "dispatch_dropship_mirrors"
# Events that can change which units a supplier has: the ones dispatch copies to the mirror's topic.
RELEVANT_EVENTS = DISPATCH_DROPSHIP.carries
COPIED_REMEMBERED = 50_000  # offers copied lately: the mirror records one within seconds
MAX_STEPS = 8  # calls per event at most: a cancel, an assign, and their reconciliations
LIST_PAGES = 10  # drop-ship orders of one WeChat order and supplier: never more than a few
SUPPLIER_CACHE_TTL_S = 30.0
SHOP_CACHE_TTL_S = 30.0  # `lvyue shop dropship --on/--off` reaches the service within this
RECONCILE_SLACK_S = 600  # WeChat's create_time versus our clock when looking a call up

MIRROR_CALLS = Counter(
    "lvyue_dispatch_dropship_calls_total",
    "WeChat drop-ship mirror calls (assign, cancel, and the list/get lookups that reconcile an unclear "
    "answer), by outcome: done, refused (for good, recorded), blocked (the set-up; dead-lettered), "
    "unclear (reconciled before asking again), found / not_found (lookups).",
    ["call", "outcome"],
)
MIRROR_SKIPPED = Counter(
    "lvyue_dispatch_dropship_skipped_total",
    "Dispatch orders not mirrored to WeChat, by why: shop_off, no_supplier_appid, replacement.",
    ["reason"],
)


class OutcomeUnclear(Exception):
    """WeChat may or may not have acted on a call: the message is retried, and the retry asks WeChat
    what exists before asking again."""


class WeChatCalls(Protocol):
    """The WeChat API by our shop id (`ShopApi`): WeChatApiError for a non-zero errcode,
    WeChatUnavailableError when WeChat could not be reached or answered 5xx."""

    async def call(
        self, shop_id: str, path: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]: ...


class Shops(Protocol):
    async def get(self, shop_id: str) -> Shop | None: ...


class SupplierAppids(Protocol):
    async def wechat_supplier_appid(self, supplier_id: str) -> str | None: ...


class MirrorRecords(Protocol):
    """`VersionedProjection[DropshipMirror]`: the newest record of each dispatch order, in memory."""

    def get(self, key: str) -> DropshipMirror | None: ...

    def __iter__(self) -> Iterator[DropshipMirror]: ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]: ...

    async def save(
        self, key: str, value: DropshipMirror, *, cause: str, extra: dict[str, Any] | None = None
    ) -> DropshipMirror: ...


class SupplierCatalog(Protocol):
    async def get_supplier(self, supplier_id: str) -> Any: ...


class CachedSupplierAppids:
    """Suppliers' WeChat appids from the catalog, re-read after a TTL (a change applies to dispatch
    orders offered after it)."""

    def __init__(self, catalog: SupplierCatalog, ttl_s: float = SUPPLIER_CACHE_TTL_S) -> None:
        self._catalog = catalog
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def wechat_supplier_appid(self, supplier_id: str) -> str | None:
        cached = self._cache.get(supplier_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        supplier = await self._catalog.get_supplier(supplier_id)
        appid: str | None = None if supplier is None else supplier.wechat_supplier_appid
        self._cache[supplier_id] = (time.monotonic(), appid)
        return appid


class _Head(BaseModel):
    """What decides whether an event is read further (the rest is not validated)."""

    model_config = ConfigDict(extra="ignore")

    event_type: str
    shop_id: str | None = None
    dispatch_id: str | None = None


def _products(lines: list[MirrorLine]) -> list[DropshipProduct]:
    return [DropshipProduct(spu_id=x.product_id, sku_id=x.sku_id, product_cnt=x.count) for x in lines]


class DropshipMirrors:
    def __init__(
        self,
        *,
        records: MirrorRecords,
        wechat: WeChatCalls,
        shops: Shops,
        suppliers: SupplierAppids,
        publish: Callable[[Event], Awaitable[None]],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._records = records
        self._wechat = wechat
        self._shops = shops
        self._suppliers = suppliers
        self._publish = publish
        self._clock = clock
        self._by_order: dict[str, set[str]] = {}  # WeChat order id -> dispatch ids with a record
        self._copied: dict[str, None] = {}  # dispatch ids whose offer was copied, oldest first

    def index(self) -> None:
        """After loading the records: which dispatch orders of each WeChat order have one."""
        for record in self._records:
            self._by_order.setdefault(record.order_id, set()).add(record.dispatch_id)

    def ds_order_id(self, dispatch_id: str) -> str | None:
        """The WeChat drop-ship order (ds_order_id) of a dispatch order, for the supplier API."""
        record = self._records.get(dispatch_id)
        return None if record is None else record.ds_order_id

    async def follows(self, event: Event) -> bool:
        """Whether the mirror reads this change (dispatch's store copies it to the mirror's topic): one
        that can move units, of a dispatch order with a record or of a shop with the mirror on."""
        if event.event_type not in RELEVANT_EVENTS or not isinstance(event, DispatchEvent):
            return False
        if self._records.get(event.dispatch_id) is not None or event.dispatch_id in self._copied:
            return True
        shop = await self._shops.get(event.shop_id)
        if shop is not None and shop.dropship_mirror:
            if isinstance(event, DispatchOffered):  # followed from now on, even if the shop turns off
                self._copied[event.dispatch_id] = None  # before the mirror has recorded it
                while len(self._copied) > COPIED_REMEMBERED:
                    del self._copied[next(iter(self._copied))]
            return True
        if isinstance(event, DispatchOffered):
            MIRROR_SKIPPED.labels("shop_off").inc()
        return False

    # --- the mirror's copies of dispatch order changes ---
    async def handle_dispatch_event(self, message: InboundMessage) -> None:
        if message.skippable(RELEVANT_EVENTS):
            return
        try:
            head = _Head.model_validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if head.event_type not in RELEVANT_EVENTS or head.shop_id is None or head.dispatch_id is None:
            return
        if self._records.get(head.dispatch_id) is None and not await self._mirrors(head):
            return  # the common case: a shop without the mirror, decided before the event is parsed
        try:
            event = DISPATCH_EVENTS.validate_json(message.value)
        except ValidationError as exc:
            raise PermanentFailure(DeadLetterReason.UNDECODABLE, str(exc)[:1000]) from exc
        if not isinstance(event, DispatchEvent):
            return
        async with self._records.lock(event.dispatch_id):
            record = self._records.get(event.dispatch_id)
            if record is None:
                record = await self._first_record(event)
                if record is None:
                    return
            else:
                facts = mirror_domain.facts_of(event)
                if facts is not None:
                    record = await self._save(record, mirror_domain.apply(record, facts), event)
            await self._converge(record, cause=str(event.event_id))

    async def _mirrors(self, head: _Head) -> bool:
        """Whether the shop has the mirror on (for a dispatch order without a record yet)."""
        shop = await self._shops.get(head.shop_id or "")
        if shop is not None and shop.dropship_mirror:
            return True
        if head.event_type == "dispatch_offered":
            MIRROR_SKIPPED.labels("shop_off").inc()
        return False

    async def _first_record(self, event: DispatchEvent) -> DropshipMirror | None:
        """A record for a dispatch order seen for the first time, if it is to be mirrored (the shop's
        switch is on: checked before)."""
        facts = mirror_domain.facts_of(event)
        if facts is None or not (isinstance(event, DispatchOffered) or facts.closed):
            return None  # a change of a dispatch order offered before the switch was on: not mirrored
        if isinstance(event, DispatchOffered) and mirror_domain.is_replacement(event):
            MIRROR_SKIPPED.labels("replacement").inc()
            return None
        appid = await self._suppliers.wechat_supplier_appid(event.supplier_id)
        if not appid:
            MIRROR_SKIPPED.labels("no_supplier_appid").inc()
            return None
        if isinstance(event, DispatchOffered):
            record = mirror_domain.start(event, supplier_appid=appid)
        else:  # closed before its offer reached us (a replay out of order): nothing to assign later
            record = mirror_domain.closed_unmirrored(event, supplier_appid=appid)
        saved = await self._records.save(record.dispatch_id, record, cause=str(event.event_id))
        self._by_order.setdefault(saved.order_id, set()).add(saved.dispatch_id)
        return saved

    async def _save(self, before: DropshipMirror, after: DropshipMirror, event: Event) -> DropshipMirror:
        if after is before:
            return before
        return await self._records.save(after.dispatch_id, after, cause=f"{event.event_id}:{after.revision}")

    async def _write(self, record: DropshipMirror, cause: str) -> DropshipMirror:
        return await self._records.save(record.dispatch_id, record, cause=f"{cause}:{record.revision}")

    # --- talking to WeChat until it holds what the dispatch order wants ---
    async def _converge(self, record: DropshipMirror, *, cause: str) -> None:
        try:
            for _ in range(MAX_STEPS):
                step = mirror_domain.next_step(record)
                if isinstance(step, InSync):
                    break
                if isinstance(step, Reconcile):
                    record = await self._reconcile(record, cause)
                else:
                    record = await self._call(record, step, cause)
            else:
                log.warning(
                    "drop-ship mirror of %s not in sync after %d calls", record.dispatch_id, MAX_STEPS
                )
        finally:
            # What was decided is published even when a later call failed (it is durable already).
            await self._flush(record, cause)

    async def _flush(self, record: DropshipMirror, cause: str) -> DropshipMirror:
        current = self._records.get(record.dispatch_id) or record
        if not current.outbox:
            return current
        for event in current.outbox:
            await self._publish(event)
        return await self._write(mirror_domain.flushed(current), cause)

    async def flush_outboxes(self) -> int:
        """At start-up: publish what a crash left unpublished (same event ids: consumers drop copies)."""
        flushed = 0
        for record in [r for r in self._records if r.outbox]:
            async with self._records.lock(record.dispatch_id):
                await self._flush(record, "startup")
                flushed += 1
        return flushed

    async def _call(self, record: DropshipMirror, step: Assign | Cancel, cause: str) -> DropshipMirror:
        record = await self._write(mirror_domain.begin(record, step, now=self._clock()), cause)
        call = MirrorCall.ASSIGN if isinstance(step, Assign) else MirrorCall.CANCEL
        try:
            if isinstance(step, Assign):
                request = DropshipAssignRequest(
                    order_id=record.order_id,
                    supplier_appid=record.supplier_appid,
                    dropship_product_list=_products(step.lines),
                )
                answer = await self._wechat.call(
                    record.shop_id, DROPSHIP_ASSIGN, request.model_dump(mode="json"), idempotent=False
                )
            else:
                cancel = DropshipCancelRequest(
                    order_id=record.order_id,
                    ds_order_id=step.ds_order_id,
                    dropship_product_list=_products(step.lines),
                )
                answer = await self._wechat.call(
                    record.shop_id, DROPSHIP_CANCEL, cancel.model_dump(mode="json"), idempotent=False
                )
        except WeChatApiError as exc:
            return await self._refused(record, call, exc, cause)
        except WeChatUnavailableError as exc:
            MIRROR_CALLS.labels(call, Verdict.UNCLEAR).inc()
            raise OutcomeUnclear(f"{call} for {record.dispatch_id}: {exc}") from exc
        MIRROR_CALLS.labels(call, Verdict.DONE).inc()
        now = self._clock()
        if isinstance(step, Cancel):
            return await self._write(mirror_domain.cancelled(record, now=now), cause)
        ds_order_id = DropshipAssignResponse.model_validate(answer).ds_order_id
        if ds_order_id:
            return await self._write(mirror_domain.assigned(record, ds_order_id, now=now), cause)
        # The docs' answer carries no id: WeChat holds it now, so look it up as after a timeout.
        return await self._reconcile(record, cause)

    async def _refused(
        self, record: DropshipMirror, call: MirrorCall, exc: WeChatApiError, cause: str
    ) -> DropshipMirror:
        verdict = mirror_domain.judge(exc.errcode)
        MIRROR_CALLS.labels(call, verdict).inc()
        if verdict == Verdict.UNCLEAR:
            raise OutcomeUnclear(f"{call} for {record.dispatch_id}: errcode {exc.errcode}") from exc
        if verdict == Verdict.BLOCKED:
            # WeChat did not act: forget the call, so a replay (once the set-up is fixed) asks again.
            await self._write(mirror_domain.not_made(record), cause)
            raise PermanentFailure(
                DeadLetterReason.PERMANENT_API_ERROR,
                f"dropship/{call} for {record.dispatch_id} refused by the set-up: "
                f"errcode {exc.errcode} {exc.errmsg}",
            ) from exc
        log.warning(
            "WeChat refused a drop-ship %s",
            call,
            extra={"dispatch_id": record.dispatch_id, "errcode": exc.errcode, "errmsg": exc.errmsg},
        )
        return await self._write(
            mirror_domain.refused(record, exc.errcode, exc.errmsg, now=self._clock()), cause
        )

    async def _reconcile(self, record: DropshipMirror, cause: str) -> DropshipMirror:
        pending = record.pending
        if pending is None:
            return record
        now = self._clock()
        if pending.call == MirrorCall.ASSIGN:
            found = await self._drop_ship_orders(record, since=pending.started_at)
            outcome = mirror_domain.reconcile_assign(
                record, found, known=self._known(record.order_id), now=now
            )
        else:
            current = await self._units_of(record, pending.ds_order_id or "")
            outcome = mirror_domain.reconcile_cancel(record, current, now=now)
        happened = len(outcome.outbox) > len(record.outbox)  # adopted, or found cancelled
        MIRROR_CALLS.labels(f"lookup_{pending.call}", "found" if happened else "not_found").inc()
        return await self._write(outcome, cause)

    def _known(self, order_id: str) -> set[str]:
        """Drop-ship orders of this WeChat order that a record already owns."""
        known: set[str] = set()
        for dispatch_id in self._by_order.get(order_id, ()):
            record = self._records.get(dispatch_id)
            if record is not None:
                known |= record.known_ds_order_ids()
        return known

    async def _drop_ship_orders(self, record: DropshipMirror, *, since: datetime) -> dict[str, Units]:
        """WeChat's drop-ship orders of this order for this supplier, created since the call (id -> units)."""
        start = int(since.timestamp()) - RECONCILE_SLACK_S
        end = min(int(self._clock().timestamp()) + RECONCILE_SLACK_S, start + MAX_LIST_WINDOW_S)
        ids: list[str] = []
        for page in range(LIST_PAGES):
            request = DropshipListRequest(
                order_id=int(record.order_id),
                supplier_appid=record.supplier_appid,
                create_time_range=TimeRange(start_time=start, end_time=end),
                page_info=DropshipPageInfo(offset=page * 100, limit=100),
            )
            answer = DropshipListResponse.model_validate(
                await self._lookup(record, DROPSHIP_LIST, request.model_dump(exclude_none=True))
            )
            ids.extend(answer.ds_order_id_list)
            if not answer.has_more or not answer.ds_order_id_list:
                break
        known = self._known(record.order_id)
        found: dict[str, Units] = {}
        for ds_order_id in dict.fromkeys(ids):
            if ds_order_id in known:
                continue
            units = await self._units_of(record, ds_order_id)
            if units is not None:
                found[ds_order_id] = units
        return found

    async def _units_of(self, record: DropshipMirror, ds_order_id: str) -> Units | None:
        """The units a drop-ship order holds in WeChat; None when WeChat does not know it."""
        answer = DropshipGetResponse.model_validate(
            await self._lookup(record, DROPSHIP_GET, {"ds_order_id": ds_order_id})
        )
        return None if answer.dropship_order is None else answer.dropship_order.counts()

    async def _lookup(self, record: DropshipMirror, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A read (list, get): safe to retry; failing, the message is retried later."""
        try:
            return await self._wechat.call(record.shop_id, path, body)
        except WeChatApiError as exc:
            if exc.errcode in mirror_domain.SETUP_ERRCODES:
                raise PermanentFailure(
                    DeadLetterReason.PERMANENT_API_ERROR,
                    f"{path} for {record.dispatch_id} refused by the set-up: errcode {exc.errcode}",
                ) from exc
            if path == DROPSHIP_GET and exc.errcode not in mirror_domain.UNCLEAR_ERRCODES:
                return {"errcode": 0}  # WeChat does not know the drop-ship order
            raise OutcomeUnclear(f"{path} for {record.dispatch_id}: errcode {exc.errcode}") from exc
        except WeChatUnavailableError as exc:
            raise OutcomeUnclear(f"{path} for {record.dispatch_id}: {exc}") from exc


async def open_dropship_mirrors(
    runtime: ServiceRuntime, settings: DispatchSettings, catalog: SupplierCatalog, stack: AsyncExitStack
) -> DropshipMirrors:
    """The mirror as the service runs it: records loaded, what a crash left unpublished published."""
    http = wechat_http_client(settings.wechat)
    stack.push_async_callback(http.aclose)
    shops = ShopCache(ShopRepository(runtime.db), ttl_s=SHOP_CACHE_TTL_S)
    wechat = ShopApi(
        WeChatShopClient(http, AccessTokenManager(runtime.db, http, settings.wechat), settings.wechat), shops
    )
    records: VersionedProjection[DropshipMirror] = VersionedProjection(runtime.db, MIRRORS, DropshipMirror)
    await records.load()

    async def publish_event(event: Event) -> None:
        await publish(runtime.producer, DISPATCH_PROGRESS, event)

    mirrors = DropshipMirrors(
        records=records,
        wechat=wechat,
        shops=shops,
        suppliers=CachedSupplierAppids(catalog),
        publish=publish_event,
    )
    mirrors.index()
    await mirrors.flush_outboxes()
    return mirrors
