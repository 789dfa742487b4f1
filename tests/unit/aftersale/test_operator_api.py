"""The operators' decision route: WeChat refusing a decision is the operator's answer, not a 500."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from services.aftersale.domain.case import Case
from services.aftersale.http import admin
from shared.events.aftersale import CaseType
from shared.wechat.client import WeChatApiError, WeChatUnavailableError
from tests.unit.aftersale.builders import CASE_ID, new_case


@dataclass
class Cases:
    case: Case

    def get(self, case_id: str) -> Case | None:
        return self.case if case_id == self.case.case_id else None


@dataclass
class RefusingService:
    refusal: Exception
    cases: Cases

    async def operator_decides(self, case_id: str, decision: str, reason: str) -> Case:
        raise self.refusal


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (
            WeChatApiError(
                "/channels/ec/aftersale/acceptapply", 40097, "cannot accept a case in USER_CANCELD"
            ),
            409,
            "wechat_refused",
        ),
        (WeChatApiError("/channels/ec/aftersale/acceptapply", -1, "system busy"), 503, "wechat_busy"),
        (WeChatUnavailableError("connect timeout"), 503, "wechat_unavailable"),
    ],
)
async def test_wechat_refusing_an_operators_decision_is_a_clear_answer(
    refusal: Exception, status: int, code: str
) -> None:
    api = FastAPI()
    api.include_router(admin)
    api.state.aftersale = RefusingService(refusal, Cases(new_case(CaseType.REFUND)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://aftersale"
    ) as client:
        answer = await client.post(f"/admin/v1/cases/{CASE_ID}/approve", json={"reason": "ok"})
    assert answer.status_code == status
    assert answer.json()["detail"]["code"] == code
