"""The ceiling for the webhook benchmark: the same route answering `success` with no work at all.
Run by the benchmark as `uvicorn ops.bare_endpoint:app`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI(title="bare endpoint (benchmark ceiling)")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/wechat/callback/{shop_id}", response_class=PlainTextResponse)
async def callback(shop_id: str, request: Request) -> str:
    await request.body()
    return "success"
