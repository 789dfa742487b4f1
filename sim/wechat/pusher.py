"""Sends queued pushes to each shop's callback URL the way WeChat does.

Each push is built by `shared.wechat.push.build_push` with the shop's Token, EncodingAESKey, appid and
format, with a fresh timestamp and nonce per attempt. It counts as delivered only on HTTP 200 with the
body "success" (or empty) within `push_timeout_s`; otherwise it is retried after 0 s, 0 s, 10 s, 1 min,
5 min, 30 min, 60 min, 60 min, 60 min (10 attempts in all), each delay divided by `time_scale`.

Pushes about different orders go out concurrently (up to `push_concurrency` at once); the first
attempts of pushes about one order leave in the order they were queued, so a scripted reordering is
seen exactly as scripted. Retries do not hold back later pushes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any

import httpx

from shared.wechat.crypto import MessageCipher
from shared.wechat.push import build_push
from sim.http import OutboundHttp
from sim.wechat.settings import WeChatSimSettings
from sim.wechat.state import AttemptOutcome, PushAttempt, PushRecord, PushStatus, SimState

RETRY_DELAYS_S: tuple[float, ...] = (0, 0, 10, 60, 300, 1800, 3600, 3600, 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
_ANSWER_KEPT = 200  # characters of a receiver's answer kept in the delivery log

log = logging.getLogger(__name__)


def is_acknowledged(status_code: int, body: bytes) -> bool:
    return status_code == 200 and body.strip() in (b"success", b"")


class Pusher:
    def __init__(
        self,
        state: SimState,
        settings: WeChatSimSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._state = state
        self._sleep = sleep
        self._settings = settings
        self._transport = transport
        self._client: OutboundHttp | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._lanes: dict[tuple[str, str], deque[PushRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_progress = 0
        self._slots = asyncio.Semaphore(settings.push_concurrency)

    @property
    def running(self) -> bool:
        return self._main is not None and not self._main.done()

    async def start(self) -> None:
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = OutboundHttp(
            connections=self._settings.push_concurrency,
            timeout_s=self._settings.push_timeout_s,
            transport=self._transport,
        )
        self._state.pushes.subscribe(self._on_queued)
        self._wake.set()  # anything queued before start goes out now
        self._main = asyncio.create_task(self._run(), name="wechat-sim-pusher")

    async def stop(self) -> None:
        self._state.pushes.unsubscribe(self._on_queued)
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._main = None
        self._tasks.clear()
        self._lanes.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def wait_idle(self) -> None:
        """Wait until nothing is queued, sending or waiting for a retry (bound it with asyncio.timeout)."""
        while True:
            await asyncio.sleep(0)
            wake_pending = self._wake is not None and self._wake.is_set()
            if not self._tasks and not self._lanes and self._in_progress == 0 and not wake_pending:
                return
            await asyncio.sleep(0.005)

    def _on_queued(self) -> None:
        # Called by the state when a push is queued; safe from any thread.
        if self._loop is None or self._wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            for push in self._state.pushes.take_ready():
                lane = self._lanes.get(push.lane)
                if lane is None:
                    lane = self._lanes[push.lane] = deque()
                    lane.append(push)
                    self._spawn(self._drain_lane(push.lane, lane), name=f"push-lane-{push.subject_id}")
                else:
                    lane.append(push)

    async def _drain_lane(self, key: tuple[str, str], lane: deque[PushRecord]) -> None:
        try:
            while lane:
                push = lane[0]
                delivered = await self._attempt(push)
                lane.popleft()
                if not delivered and push.status is PushStatus.QUEUED:
                    self._spawn(self._retry(push), name=f"push-retry-{push.push_id}")
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _retry(self, push: PushRecord) -> None:
        while len(push.attempts) < MAX_ATTEMPTS and push.status is PushStatus.QUEUED:
            delay = RETRY_DELAYS_S[len(push.attempts) - 1] / self._settings.time_scale
            await self._sleep(delay)
            if await self._attempt(push):
                return

    async def _attempt(self, push: PushRecord) -> bool:
        """One push of `push`; records the attempt and the push's status. True when acknowledged."""
        shop = self._state.shops.get(push.appid)
        if shop is None or not shop.callback_url:
            push.status = PushStatus.UNDELIVERABLE
            return False
        assert self._client is not None
        self._in_progress += 1
        try:
            async with self._slots:
                cipher = MessageCipher(shop.encoding_aes_key, shop.appid) if shop.encrypted else None
                signed = build_push(
                    push.document,
                    token=shop.token,
                    fmt=shop.push_format,
                    cipher=cipher,
                    timestamp=self._state.now(),
                    nonce=str(secrets.randbelow(9 * 10**9) + 10**9),
                )
                number = len(push.attempts) + 1
                started = self._state.clock()
                loop_started = asyncio.get_running_loop().time()
                status_code: int | None = None
                answer = b""
                error = ""
                try:
                    # A transport may ignore httpx's timeout (an in-process ASGI app does): bound it here too.
                    async with asyncio.timeout(self._settings.push_timeout_s):
                        reply = await self._client.request(
                            "POST",
                            shop.callback_url,
                            params=signed.query,
                            content=signed.body,
                            headers={"Content-Type": signed.content_type},
                        )
                        status_code, answer = reply.status, reply.body
                    outcome = (
                        AttemptOutcome.DELIVERED
                        if is_acknowledged(status_code, answer)
                        else AttemptOutcome.REJECTED
                    )
                except (TimeoutError, httpx.TimeoutException):
                    outcome, error = (
                        AttemptOutcome.TIMEOUT,
                        f"no answer within {self._settings.push_timeout_s} s",
                    )
                except httpx.HTTPError as exc:
                    outcome, error = AttemptOutcome.ERROR, f"{type(exc).__name__}: {exc}"[:_ANSWER_KEPT]
                elapsed_ms = (asyncio.get_running_loop().time() - loop_started) * 1000
                push.attempts.append(
                    PushAttempt(
                        number=number,
                        at=started,
                        outcome=outcome,
                        status_code=status_code,
                        answer=answer[:_ANSWER_KEPT].decode(errors="replace"),
                        error=error,
                        duration_ms=round(elapsed_ms, 3),
                    )
                )
        finally:
            self._in_progress -= 1
        if outcome is AttemptOutcome.DELIVERED:
            push.status = PushStatus.DELIVERED
            return True
        if number >= MAX_ATTEMPTS:
            push.status = PushStatus.FAILED
            log.warning("push %s (%s) failed after %s attempts", push.push_id, push.event, number)
        return False
