"""E-waybills (电子面单) as WeChat keeps them (pure): precreate mints an id (not idempotent: every call a
new one), create allocates the carrier's waybill number, cancel releases it, print/get returns the
opaque print_info for the packer's local print component. The `order_info` dict has WeChat's shape.

Status of an e-waybill order: 1 number allocated, 2 cancelled, 3 printed, 4 shipped (SDKs); 0 is
this stand-in's own value for "precreated, no number yet". Path statuses (pushed as
ewaybill_push_path): 0 awaiting pickup, 1 picked up, 2 in transit, 3 out for delivery, 4 in locker,
5 signed, 6 returned, 7 forwarded, 8 exception, 9 out of locker, 99 unknown.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from shared.wechat.api import ErrCode
from sim.wechat.errors import SimErrCode, WeChatApiError
from sim.wechat.orders import DELIVERY_COMPANY_IDS, OrderEvent

_WAYBILL_PREFIX = {
    "SF": "SF",
    "JD": "JDVA",
    "YTO": "YT",
    "JTSD": "JT",
    "DBKD": "DPK",
    "ZTO": "78",
    "STO": "77",
}
OUT_OF_NUMBERS = "网点电子面单余额不足"  # the carrier's delivery_error_msg when no number is left


class EwaybillStatus(IntEnum):
    PRECREATED = 0
    CREATED = 1
    CANCELLED = 2
    PRINTED = 3
    SHIPPED = 4


@dataclass
class EwaybillRecord:
    appid: str
    doc: dict[str, Any]  # WeChat's order_info shape

    @property
    def ewaybill_order_id(self) -> str:
        return str(self.doc["ewaybill_order_id"])

    @property
    def status(self) -> EwaybillStatus:
        return EwaybillStatus(self.doc["status"])


class EwaybillBook:
    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self.records: dict[str, EwaybillRecord] = {}
        # Waybill numbers left per (appid, delivery_id); absent means unlimited.
        self.balance: dict[tuple[str, str], int] = {}

    def find(self, appid: str, ewaybill_order_id: str) -> EwaybillRecord:
        record = self.records.get(ewaybill_order_id)
        if record is None or record.appid != appid:
            raise WeChatApiError(SimErrCode.EWAYBILL_NOT_FOUND)
        return record

    def by_waybill(self, appid: str, waybill_id: str) -> list[EwaybillRecord]:
        return [
            r for r in self.records.values() if r.appid == appid and r.doc.get("waybill_id") == waybill_id
        ]

    def precreate(self, appid: str, request: dict[str, Any]) -> EwaybillRecord:
        if request.get("delivery_id") not in DELIVERY_COMPANY_IDS:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "delivery_id")
        for party in ("sender", "receiver"):
            address = request.get(party) or {}
            if not address.get("name") or not address.get("mobile"):
                raise WeChatApiError(ErrCode.INVALID_ARGS, f"{party}.name and {party}.mobile are required")
        if not request.get("ec_order_list"):
            raise WeChatApiError(ErrCode.INVALID_ARGS, "ec_order_list is empty")
        ewaybill_order_id = str(self._rng.randrange(10**15, 10**16))
        while ewaybill_order_id in self.records:
            ewaybill_order_id = str(self._rng.randrange(10**15, 10**16))
        doc = {
            "ewaybill_order_id": ewaybill_order_id,
            "delivery_id": request["delivery_id"],
            "site_code": request.get("site_code", ""),
            "ewaybill_acct_id": request.get("ewaybill_acct_id", ""),
            "sender": request["sender"],
            "receiver": request["receiver"],
            "ec_order_list": request["ec_order_list"],
            "remark": request.get("remark", ""),
            "shop_id": request.get("shop_id", ""),
            "waybill_id": "",
            "status": int(EwaybillStatus.PRECREATED),
            "path_info": [],
        }
        record = EwaybillRecord(appid, doc)
        self.records[ewaybill_order_id] = record
        return record

    def _new_waybill_id(self, delivery_id: str) -> str:
        prefix = _WAYBILL_PREFIX.get(delivery_id, "")
        return prefix + str(self._rng.randrange(10**12, 10**13))

    def create(self, appid: str, ewaybill_order_id: str, *, template_id: str) -> EwaybillRecord:
        record = self.find(appid, ewaybill_order_id)
        if record.status is not EwaybillStatus.PRECREATED:
            raise WeChatApiError(SimErrCode.EWAYBILL_EXISTS)
        delivery_id = str(record.doc["delivery_id"])
        left = self.balance.get((appid, delivery_id))
        if left is not None:
            if left <= 0:
                raise WeChatApiError(
                    SimErrCode.EWAYBILL_NO_NUMBER, extra={"delivery_error_msg": OUT_OF_NUMBERS}
                )
            self.balance[(appid, delivery_id)] = left - 1
        record.doc["waybill_id"] = self._new_waybill_id(delivery_id)
        record.doc["status"] = int(EwaybillStatus.CREATED)
        record.doc["template_id"] = template_id
        return record

    def cancel(self, appid: str, ewaybill_order_id: str, *, waybill_id: str) -> EwaybillRecord:
        record = self.find(appid, ewaybill_order_id)
        if waybill_id and waybill_id != record.doc["waybill_id"]:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "waybill_id does not match")
        if record.status is EwaybillStatus.SHIPPED:
            raise WeChatApiError(ErrCode.INVALID_ARGS, "the parcel has shipped")
        record.doc["status"] = int(EwaybillStatus.CANCELLED)
        return record

    def print_info(self, appid: str, ewaybill_order_id: str, *, template_id: str) -> str:
        record = self.find(appid, ewaybill_order_id)
        if record.status not in (EwaybillStatus.CREATED, EwaybillStatus.PRINTED, EwaybillStatus.SHIPPED):
            raise WeChatApiError(ErrCode.INVALID_ARGS, "the e-waybill has no waybill number")
        content = {
            "waybill_id": record.doc["waybill_id"],
            "delivery_id": record.doc["delivery_id"],
            "template_id": template_id or record.doc.get("template_id", "single"),
            "receiver": record.doc["receiver"],
        }
        return base64.b64encode(json.dumps(content, ensure_ascii=False).encode()).decode()

    def mark_shipped(self, record: EwaybillRecord) -> None:
        if record.status in (EwaybillStatus.CREATED, EwaybillStatus.PRINTED):
            record.doc["status"] = int(EwaybillStatus.SHIPPED)

    def add_path(self, record: EwaybillRecord, *, status: int, desc: str, now: int) -> OrderEvent:
        """The carrier reports progress: appended to path_info and pushed as ewaybill_push_path."""
        record.doc["path_info"].append({"status": status, "desc": desc, "update_time": now})
        info = {
            "ewaybill_order_id": record.ewaybill_order_id,
            "waybill_id": record.doc["waybill_id"],
            "update_time": now,
            "status": status,
            "desc": desc,
        }
        return OrderEvent("ewaybill_push_path", {"waybill_info": info}, record.ewaybill_order_id)
