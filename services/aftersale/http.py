"""The operators' API (port 8004, `/admin/v1`), used by `lvyue aftersale`: cases on hold, decisions,
re-ships, and each shop's policy. Every route needs an operator token (shared/operators.py): viewers
read, deciders also decide cases and re-ship, admins also set policies; each change is audited."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.aftersale.domain.case import Case
from services.aftersale.handlers import Aftersale, ShopPolicy
from shared.events.aftersale import AffectedLine, CaseState, CaseType
from shared.operators import Admin, AuditTrail, Decider, Viewer
from shared.wechat.client import WeChatApiError, WeChatUnavailableError

admin = APIRouter(prefix="/admin/v1", tags=["operators"])


async def _aftersale(request: Request) -> Aftersale:
    aftersale: Aftersale = request.app.state.aftersale
    return aftersale


async def _audit(request: Request) -> AuditTrail:
    audit: AuditTrail = request.app.state.audit
    return audit


Service = Annotated[Aftersale, Depends(_aftersale)]
Audit = Annotated[AuditTrail, Depends(_audit)]
CaseId = Annotated[str, Path(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]


class CaseList(BaseModel):
    items: list[Case]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class ReshipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shop_id: str
    order_id: str = Field(pattern=r"^[0-9]{1,20}$")
    lines: list[AffectedLine] = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=500, description="lost, damaged, ...")


@admin.get("/cases", response_model=CaseList, summary="Cases, newest first")
async def list_cases(
    service: Service,
    _: Viewer,
    state: Annotated[CaseState | None, Query()] = None,
    order_id: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    open_only: Annotated[bool, Query()] = False,
) -> CaseList:
    cases = [
        c
        for c in service.cases
        if (state is None or c.state == state)
        and (order_id is None or c.order_id == order_id)
        and not (open_only and c.final)
    ]
    return CaseList(
        items=sorted(cases, key=lambda c: c.timeline[0].at if c.timeline else c.version, reverse=True)
    )


@admin.get("/cases/{case_id}", response_model=Case, summary="One case with its timeline")
async def show_case(service: Service, _: Viewer, case_id: CaseId) -> Case:
    case = service.cases.get(case_id)
    if case is None:
        raise HTTPException(404, f"no case {case_id}")
    return case


@admin.post("/cases/{case_id}/{decision}", response_model=Case, summary="An operator approves or rejects")
async def decide_case(
    service: Service,
    operator: Decider,
    audit: Audit,
    case_id: CaseId,
    decision: Literal["approve", "reject"],
    body: Decision,
) -> Case:
    details = {"reason": body.reason}
    case = service.cases.get(case_id)
    if case is None:
        raise HTTPException(404, f"no case {case_id}")
    if case.final:
        await audit.record(operator, decision, f"case:{case_id}", "409", details)
        raise HTTPException(409, f"the case is {case.state}")
    try:
        decided = await service.operator_decides(case_id, decision, body.reason)
    except WeChatUnavailableError as exc:
        await audit.record(operator, decision, f"case:{case_id}", "503", details)
        raise HTTPException(503, {"code": "wechat_unavailable", "detail": str(exc)}) from exc
    except WeChatApiError as exc:
        await audit.record(
            operator, decision, f"case:{case_id}", "409" if not exc.transient else "503", details
        )
        if exc.transient:
            raise HTTPException(503, {"code": "wechat_busy", "errcode": exc.errcode}) from exc
        # WeChat moved first (the buyer withdrew the case, say): its push settles the case here.
        raise HTTPException(
            409, {"code": "wechat_refused", "errcode": exc.errcode, "detail": exc.errmsg}
        ) from exc
    await audit.record(operator, decision, f"case:{case_id}", "ok", {**details, "state": decided.state})
    return decided


@admin.post("/reships", response_model=Case, summary="Re-ship (补发) lost or damaged units")
async def reship(service: Service, operator: Decider, audit: Audit, body: ReshipIn) -> Case:
    case = await service.open_reship(
        Case(
            case_id=f"R{uuid.uuid4().hex[:16]}",
            order_id=body.order_id,
            shop_id=body.shop_id,
            case_type=CaseType.RESHIP,
            lines=body.lines,
            wechat_status="",
            operator_reason=body.reason,
        )
    )
    details = {"order_id": body.order_id, "shop_id": body.shop_id, "reason": body.reason}
    await audit.record(operator, "reship", f"case:{case.case_id}", "ok", details)
    return case


@admin.put("/policies/{shop_id}", response_model=ShopPolicy, summary="A shop's after-sale policy")
async def set_policy(
    service: Service, operator: Admin, audit: Audit, shop_id: str, policy: ShopPolicy
) -> ShopPolicy:
    if policy.shop_id != shop_id:
        raise HTTPException(422, "shop_id in the path and the body differ")
    saved = await service.policies.save(policy)
    await audit.record(operator, "set_policy", f"shop:{shop_id}", "ok", policy.model_dump(mode="json"))
    await service.reconsider_shop(shop_id, cause=f"policy:{shop_id}")
    return saved
