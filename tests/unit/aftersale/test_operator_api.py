"""The operators' API: who may do what (every route needs a token of a high enough role, and each
change is audited), and WeChat refusing a decision is the operator's answer, not a 500."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from services.aftersale.domain.case import Case
from services.aftersale.handlers import ShopPolicy
from services.aftersale.http import admin
from shared.events.aftersale import CaseType
from shared.operators import OperatorRole
from shared.wechat.client import WeChatApiError, WeChatUnavailableError
from tests.unit.aftersale.builders import CASE_ID, ORDER_ID, SHOP, new_case
from tests.unit.operators.fakes import NOBODY, bearer, operators_app


@dataclass
class Cases:
    case: Case

    def get(self, case_id: str) -> Case | None:
        return self.case if case_id == self.case.case_id else None

    def __iter__(self) -> Iterator[Case]:
        return iter([self.case])


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
    api, audit = operators_app(admin)
    api.state.aftersale = RefusingService(refusal, Cases(new_case(CaseType.REFUND)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://aftersale"
    ) as client:
        answer = await client.post(
            f"/admin/v1/cases/{CASE_ID}/approve", json={"reason": "ok"}, headers=bearer(OperatorRole.DECIDER)
        )
    assert answer.status_code == status
    assert answer.json()["detail"]["code"] == code
    assert audit.entries == [("op-decider", "approve", f"case:{CASE_ID}", str(status), {"reason": "ok"})]


@dataclass
class Policies:
    saved: list[ShopPolicy] = field(default_factory=list)

    async def save(self, policy: ShopPolicy) -> ShopPolicy:
        self.saved.append(policy)
        return policy


@dataclass
class AgreeingService:
    """Does what it is asked and remembers it."""

    cases: Cases
    policies: Policies = field(default_factory=Policies)
    done: list[str] = field(default_factory=list)

    async def operator_decides(self, case_id: str, decision: str, reason: str) -> Case:
        self.done.append(f"{decision}:{case_id}")
        return self.cases.case

    async def open_reship(self, case: Case) -> Case:
        self.done.append(f"reship:{case.order_id}")
        return case

    async def reconsider_shop(self, shop_id: str | None, *, cause: str) -> None:
        self.done.append(f"reconsider:{shop_id}")


RESHIP = {
    "shop_id": SHOP,
    "order_id": ORDER_ID,
    "lines": [{"product_id": "p-1", "sku_id": "sku-1", "count": 1}],
    "reason": "lost",
}
POLICY_BODY = {"shop_id": SHOP, "auto_refund_before_shipment": True, "auto_approve_under_fen": 100}
# (method, path, body, the lowest role allowed)
ROUTES = [
    ("GET", "/admin/v1/cases", None, OperatorRole.VIEWER),
    ("GET", f"/admin/v1/cases/{CASE_ID}", None, OperatorRole.VIEWER),
    ("POST", f"/admin/v1/cases/{CASE_ID}/approve", {"reason": "ok"}, OperatorRole.DECIDER),
    ("POST", f"/admin/v1/cases/{CASE_ID}/reject", {"reason": "no"}, OperatorRole.DECIDER),
    ("POST", "/admin/v1/reships", RESHIP, OperatorRole.DECIDER),
    ("PUT", f"/admin/v1/policies/{SHOP}", POLICY_BODY, OperatorRole.ADMIN),
]


def test_every_route_of_the_operators_api_is_in_the_matrix() -> None:
    served = {(method, route.path) for route in admin.routes for method in route.methods}  # type: ignore[attr-defined]
    assert served == {
        ("GET", "/admin/v1/cases"),
        ("GET", "/admin/v1/cases/{case_id}"),
        ("POST", "/admin/v1/cases/{case_id}/{decision}"),
        ("POST", "/admin/v1/reships"),
        ("PUT", "/admin/v1/policies/{shop_id}"),
    }


@pytest.mark.parametrize(("method", "path", "body", "lowest"), ROUTES)
@pytest.mark.parametrize("who", [None, "made-up", *OperatorRole])
async def test_who_may_use_each_route(
    method: str, path: str, body: dict[str, object] | None, lowest: OperatorRole, who: str | None
) -> None:
    api, audit = operators_app(admin)
    service = AgreeingService(Cases(new_case(CaseType.REFUND)))
    api.state.aftersale = service
    headers = (
        {"Authorization": f"Bearer {NOBODY}"}
        if who == "made-up"
        else bearer(None if who is None else OperatorRole(who))
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://aftersale"
    ) as client:
        answer = await client.request(method, path, json=body, headers=headers)
    if who is None or who == "made-up":
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["detail"]["code"] == "operator_token_required"
    elif not OperatorRole(who).allows(lowest):
        assert answer.status_code == 403
        assert answer.json()["detail"]["code"] == "role_too_low"
    else:
        assert answer.status_code == 200, answer.text
        if method == "GET":
            assert audit.entries == []
        else:
            assert [(name, outcome) for name, _, _, outcome, _ in audit.entries] == [(f"op-{who}", "ok")]
        return
    assert service.done == []  # refused: nothing was done
    assert audit.entries == []
