"""Helpers for tests that drive the stand-in in-process."""

from __future__ import annotations

from typing import Any

import httpx

DOC_TIME = 1_714_037_059.0  # the timestamp of WeChat's own plaintext-push example


class FakeClock:
    """A clock for SimState: returns `now` until told to move."""

    def __init__(self, start: float = DOC_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SimCallError(Exception):
    """A control call, or the HTTP layer of a WeChat call, did not answer as expected."""


class SimClient:
    """A test's view of a stand-in reached through `http`: WeChat calls with a cached token per shop,
    and the control API. WeChat errors are returned (errcode), not raised."""

    def __init__(self, http: httpx.AsyncClient, secrets: dict[str, str]) -> None:
        self.http = http
        self.secrets = secrets  # appid -> AppSecret
        self.tokens: dict[str, str] = {}

    async def token(self, appid: str) -> str:
        if appid not in self.tokens:
            params = {"grant_type": "client_credential", "appid": appid, "secret": self.secrets[appid]}
            answer = (await self.http.get("/cgi-bin/token", params=params)).json()
            if "access_token" not in answer:
                raise SimCallError(f"no token for {appid}: {answer}")
            self.tokens[appid] = answer["access_token"]
        return self.tokens[appid]

    async def call(self, path: str, body: Any, *, appid: str, raw: bytes | None = None) -> dict[str, Any]:
        """POST a WeChat API call; `raw` sends those bytes instead of `body` as JSON."""
        params = {"access_token": await self.token(appid)}
        if raw is not None:
            response = await self.http.post(path, params=params, content=raw)
        else:
            response = await self.http.post(path, params=params, json=body)
        answer = response.json()
        if response.status_code != 200 or "errcode" not in answer or "errmsg" not in answer:
            raise SimCallError(f"{path}: HTTP {response.status_code} {answer}")
        result: dict[str, Any] = answer
        return result

    async def control(self, path: str, body: Any = None, *, expect: int = 200) -> Any:
        response = await self.http.post(path, json=body)
        if response.status_code != expect:
            raise SimCallError(f"{path}: HTTP {response.status_code} (expected {expect}) {response.text}")
        return response.json()
