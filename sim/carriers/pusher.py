"""Sends pushes the way the aggregators do: a form POST to the subscriber's callback URL, counted as
delivered only on HTTP 200 with the format's success answer (Kuaidi100 `result: true`, Kdniao
`Success: true`) within push_timeout_s; otherwise retried after settings.retry_delays_s (each divided
by time_scale). The pushes of one lane (one receiver, one parcel) make their first attempt in the
order queued; retries run on their own and do not hold back later pushes."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any

import httpx

from shared.carriers import kdniao, kuaidi100
from sim.carriers.settings import CarrierSimSettings
from sim.carriers.state import AttemptOutcome, CarrierWorld, Channel, PushAttempt, PushRecord, PushStatus
from sim.http import OutboundHttp

FORM = "application/x-www-form-urlencoded;charset=UTF-8"
_ANSWER_KEPT = 300

log = logging.getLogger(__name__)

Lane = tuple[str, str, str, str]


class Pusher:
    def __init__(
        self,
        world: CarrierWorld,
        settings: CarrierSimSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._world = world
        self._settings = settings
        self._transport = transport
        self._sleep = sleep
        self._client: OutboundHttp | None = None
        self._lanes: dict[Lane, deque[PushRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.push_concurrency)

    @property
    def max_attempts(self) -> int:
        return len(self._settings.retry_delays_s) + 1

    async def start(self) -> None:
        if self._client is None:
            self._client = OutboundHttp(
                connections=self._settings.push_concurrency,
                timeout_s=self._settings.push_timeout_s,
                transport=self._transport,
            )

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._lanes.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def enqueue(self, push: PushRecord) -> None:
        """Record `push` and send it after the pushes already queued in its lane."""
        self._world.pushes.append(push)
        lane = self._lanes.get(push.lane)
        if lane is None:
            lane = self._lanes[push.lane] = deque([push])
            self._spawn(self._drain(push.lane, lane), f"carrier-push-lane-{push.number}")
        else:
            lane.append(push)

    async def wait_idle(self) -> None:
        """Until nothing is queued, sending or waiting for a retry (bound it with asyncio.timeout)."""
        while True:
            await asyncio.sleep(0)
            if not self._tasks and not self._lanes:
                return
            await asyncio.sleep(0.002)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: Lane, lane: deque[PushRecord]) -> None:
        try:
            while lane:
                push = lane[0]
                delivered = await self._attempt(push)
                lane.popleft()
                if not delivered and push.status is PushStatus.QUEUED:
                    self._spawn(self._retry(push), f"carrier-push-retry-{push.push_id}")
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _retry(self, push: PushRecord) -> None:
        while push.status is PushStatus.QUEUED and len(push.attempts) < self.max_attempts:
            await self._sleep(
                self._settings.retry_delays_s[len(push.attempts) - 1] / self._settings.time_scale
            )
            if await self._attempt(push):
                return

    async def _attempt(self, push: PushRecord) -> bool:
        """One POST of `push`; records the attempt and the push's status. True when acknowledged."""
        assert self._client is not None, "pusher not started"
        number = len(push.attempts) + 1
        started = self._world.clock()
        loop = asyncio.get_running_loop()
        began = loop.time()
        status_code: int | None = None
        answer = b""
        error = ""
        async with self._slots:
            try:
                # An in-process ASGI transport ignores httpx's timeout: bound it here too.
                async with asyncio.timeout(self._settings.push_timeout_s):
                    reply = await self._client.request(
                        "POST", push.url, content=push.body, headers={"Content-Type": FORM}
                    )
                status_code, answer = reply.status, reply.body
                acknowledged = (
                    kuaidi100.is_success_reply(status_code, answer)
                    if push.channel is Channel.KUAIDI100
                    else kdniao.is_success_reply(status_code, answer)
                )
                outcome = AttemptOutcome.DELIVERED if acknowledged else AttemptOutcome.REJECTED
            except (TimeoutError, httpx.TimeoutException):
                outcome, error = AttemptOutcome.TIMEOUT, f"no answer within {self._settings.push_timeout_s} s"
            except httpx.HTTPError as exc:
                outcome, error = AttemptOutcome.ERROR, f"{type(exc).__name__}: {exc}"[:_ANSWER_KEPT]
        push.attempts.append(
            PushAttempt(
                number=number,
                at=started,
                outcome=outcome,
                status_code=status_code,
                answer=answer[:_ANSWER_KEPT].decode(errors="replace"),
                error=error,
                duration_ms=round((loop.time() - began) * 1000, 3),
            )
        )
        if outcome is AttemptOutcome.DELIVERED:
            push.status = PushStatus.DELIVERED
            return True
        if number >= self.max_attempts:
            push.status = PushStatus.FAILED
            log.warning(
                "push %s (%s %s) failed after %s attempts", push.push_id, push.channel, push.number, number
            )
        return False
