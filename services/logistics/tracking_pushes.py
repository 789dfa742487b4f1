"""WeChat e-waybill tracking pushes (`ewaybill_push_path`, forwarded by order_ingest)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from services.logistics.domain.tracking import state_of
from services.logistics.handlers import Logistics
from shared.events.dead_letter import DeadLetterReason
from shared.events.logistics import TraceEntry, TrackingSource
from shared.events.shop_events import WeChatPushReceived
from shared.kafka.consumer import InboundMessage, PermanentFailure


class ParcelNotYetKnown(Exception):
    """The push came before the shipment event: retried with backoff (then dead-lettered, replayable)."""


async def handle_ewaybill_push(logistics: Logistics, message: InboundMessage) -> None:
    try:
        push = WeChatPushReceived.model_validate_json(message.value)
        info = push.payload["waybill_info"]
        waybill_no = str(info["waybill_id"])
        status, update_time = int(info["status"]), int(info["update_time"])
        desc = str(info.get("desc", ""))
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        raise PermanentFailure(
            DeadLetterReason.UNDECODABLE, f"not an ewaybill_push_path: {exc}"[:1000]
        ) from exc
    state = state_of(TrackingSource.WECHAT_EWAYBILL, status)
    if state is None:
        return  # 99 "unknown": nothing to learn
    entry = TraceEntry(
        at=datetime.fromtimestamp(update_time, UTC),
        text=desc,
        state=state,
        source=TrackingSource.WECHAT_EWAYBILL,
    )
    known = await logistics.track(
        None, waybill_no, [entry], source="wechat_ewaybill", cause=f"push:{push.dedupe_key}"
    )
    if not known:
        raise ParcelNotYetKnown(f"no parcel with waybill {waybill_no} yet")
