"""WeChat stand-in: access tokens (/cgi-bin/token, /cgi-bin/stable_token), expiry, overlap, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.wechat.api import ErrCode
from sim.wechat.app import create_app
from sim.wechat.errors import SimErrCode, WeChatApiError
from sim.wechat.settings import WeChatSimSettings
from sim.wechat.state import Shop, SimState
from sim.wechat.testing import FakeClock

APPID = "wx134c8103faa5a59e"
SECRET = "s3cr3t"
LIST_BODY = {"create_time_range": {"start_time": 0, "end_time": 3600}, "page_size": 10}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimState:
    sim = SimState(clock=clock, seed=1)
    sim.register_shop(Shop(appid=APPID, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    return sim


@pytest.fixture
async def client(state: SimState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.weixin.test") as http:
        yield http


async def fetch_token(client: httpx.AsyncClient, **overrides: str) -> dict[str, Any]:
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, **overrides}
    response = await client.get("/cgi-bin/token", params=params)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def stable(client: httpx.AsyncClient, *, force_refresh: bool = False) -> dict[str, Any]:
    body = {
        "grant_type": "client_credential",
        "appid": APPID,
        "secret": SECRET,
        "force_refresh": force_refresh,
    }
    response = await client.post("/cgi-bin/stable_token", json=body)
    result: dict[str, Any] = response.json()
    return result


async def errcode_with(client: httpx.AsyncClient, token: str | None) -> int:
    """The errcode an authenticated call answers with this token (0: the token works)."""
    params = {"access_token": token} if token is not None else {}
    response = await client.post("/channels/ec/order/list/get", params=params, json=LIST_BODY)
    assert response.status_code == 200  # WeChat answers 200 even on errors
    return int(response.json()["errcode"])


async def test_token_is_issued_like_wechat_and_works(client: httpx.AsyncClient) -> None:
    body = await fetch_token(client)
    assert body["expires_in"] == 7200
    assert len(body["access_token"]) >= 100
    assert "errcode" not in body  # WeChat's success answer has only the token and its lifetime
    assert await errcode_with(client, body["access_token"]) == 0


@pytest.mark.parametrize(
    ("overrides", "errcode"),
    [
        ({"secret": "wrong"}, ErrCode.INVALID_CREDENTIAL),
        ({"appid": "wx_unknown"}, ErrCode.INVALID_APPID),
        ({"grant_type": "password"}, SimErrCode.INVALID_GRANT_TYPE),
        ({"appid": ""}, SimErrCode.APPID_MISSING),
        ({"secret": ""}, SimErrCode.SECRET_MISSING),
    ],
)
async def test_bad_credentials_get_wechat_errcodes(
    client: httpx.AsyncClient, state: SimState, overrides: dict[str, str], errcode: int
) -> None:
    body = await fetch_token(client, **overrides)
    assert body["errcode"] == errcode
    assert "access_token" not in body
    assert " rid: " in body["errmsg"]
    (call,) = state.calls.calls(path="/cgi-bin/token")
    assert call.errcode == errcode
    assert call.request.get("secret") in ("***", None)  # secrets are never recorded


async def test_missing_unknown_and_expired_tokens(client: httpx.AsyncClient, clock: FakeClock) -> None:
    token = (await fetch_token(client))["access_token"]
    assert await errcode_with(client, None) == ErrCode.TOKEN_MISSING
    assert await errcode_with(client, "not-a-token") == ErrCode.INVALID_CREDENTIAL
    clock.advance(7199)
    assert await errcode_with(client, token) == 0
    clock.advance(1)
    assert await errcode_with(client, token) == ErrCode.TOKEN_EXPIRED


async def test_a_new_token_retires_the_old_one_after_five_minutes(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    old = (await fetch_token(client))["access_token"]
    clock.advance(100)
    new = (await fetch_token(client))["access_token"]
    assert new != old
    clock.advance(299)
    assert await errcode_with(client, old) == 0  # both work during the overlap
    assert await errcode_with(client, new) == 0
    clock.advance(1)
    assert await errcode_with(client, old) == ErrCode.INVALID_CREDENTIAL
    assert await errcode_with(client, new) == 0


async def test_lifetime_comes_from_settings() -> None:
    app = create_app(settings=WeChatSimSettings(token_ttl_s=60, old_token_overlap_s=10))
    sim: SimState = app.state.sim
    sim.register_shop(Shop(appid=APPID, secret=SECRET, token="AAAAA", encoding_aes_key="A" * 43))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as http:
        body = await fetch_token(http)
    assert body["expires_in"] == 60


def test_overlap_is_configurable(clock: FakeClock) -> None:
    sim = SimState(clock=clock, token_ttl_s=60, old_token_overlap_s=10)
    old = sim.tokens.issue_basic(APPID)
    sim.tokens.issue_basic(APPID)
    clock.advance(9)
    assert sim.tokens.resolve(old.value) is old
    clock.advance(1)
    with pytest.raises(WeChatApiError) as refused:
        sim.tokens.resolve(old.value)
    assert refused.value.errcode == ErrCode.INVALID_CREDENTIAL


async def test_stable_token_is_stable_and_independent_of_token(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = await stable(client)
    clock.advance(1000)
    again = await stable(client)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == first["expires_in"] - 1000
    await fetch_token(client)  # /cgi-bin/token calls do not touch the stable token
    clock.advance(301)
    assert await errcode_with(client, first["access_token"]) == 0


async def test_stable_token_renews_in_its_last_five_minutes_keeping_the_old_one_valid(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = (await stable(client))["access_token"]
    clock.advance(7200 - 299)
    renewed = await stable(client)
    assert renewed["access_token"] != first
    assert renewed["expires_in"] == 7200
    assert await errcode_with(client, first) == 0  # until its own expiry
    clock.advance(299)
    assert await errcode_with(client, first) == ErrCode.TOKEN_EXPIRED
    assert await errcode_with(client, renewed["access_token"]) == 0


async def test_stable_force_refresh_replaces_at_once_and_is_limited(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = (await stable(client))["access_token"]
    forced = (await stable(client, force_refresh=True))["access_token"]
    assert forced != first
    assert await errcode_with(client, first) == ErrCode.INVALID_CREDENTIAL
    clock.advance(10)
    assert (await stable(client, force_refresh=True))["access_token"] == forced  # < 30 s apart: no refresh
    for _ in range(19):
        clock.advance(31)
        assert "access_token" in await stable(client, force_refresh=True)
    clock.advance(31)
    refused = await stable(client, force_refresh=True)
    assert refused["errcode"] == ErrCode.DAILY_QUOTA
    assert "access_token" in await stable(client)  # normal mode still works
    clock.advance(24 * 3600)
    assert "access_token" in await stable(client, force_refresh=True)  # a new day, a new quota


async def test_stable_token_rejects_wrong_json_types_and_bad_secret(client: httpx.AsyncClient) -> None:
    bad_type = await client.post(
        "/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": "yes"},
    )
    assert bad_type.json()["errcode"] == ErrCode.INVALID_JSON_TYPES
    wrong = await client.post(
        "/cgi-bin/stable_token", json={"grant_type": "client_credential", "appid": APPID, "secret": "nope"}
    )
    assert wrong.json()["errcode"] == ErrCode.INVALID_CREDENTIAL


async def test_expire_tokens_fault(client: httpx.AsyncClient, state: SimState) -> None:
    basic = (await fetch_token(client))["access_token"]
    stable_token = (await stable(client))["access_token"]
    answer = await client.post("/sim/faults", json={"fault": "expire_tokens", "appid": APPID})
    assert answer.json()["tokens_expired"] == 2
    assert await errcode_with(client, basic) == ErrCode.TOKEN_EXPIRED
    assert await errcode_with(client, stable_token) == ErrCode.TOKEN_EXPIRED
    renewed = (await stable(client))["access_token"]
    assert renewed != stable_token
    assert await errcode_with(client, renewed) == 0
    assert await errcode_with(client, (await fetch_token(client))["access_token"]) == 0


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_SIM_TIME_SCALE", "600")
    monkeypatch.setenv("WECHAT_SIM_HTTP_PORT", "19001")
    settings = WeChatSimSettings()
    assert settings.time_scale == 600
    assert settings.http_port == 19001
    assert settings.token_ttl_s == 7200
    assert settings.push_timeout_s == 5.0
