"""The stand-in's world, in memory (plain classes, no I/O): issued waybills, tracked parcels with
their subscribers and timelines, the pushes to send (with every attempt and answer) and the calls
received. Time comes from an injectable clock (unix seconds) so tests can pin it."""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.carriers.codes import Carrier
from sim.carriers.settings import FaultShares, KdniaoAccount
from sim.carriers.timeline import Outcome, Route, Step

Clock = Callable[[], float]


@dataclass
class IssuedWaybill:
    """A number minted by /label/order (method=order)."""

    number: str
    carrier: Carrier
    key: str  # the Kuaidi100 account that asked
    task_id: str
    order_id: str | None
    issued_at: float
    param: dict[str, Any]
    cancelled_at: float | None = None


@dataclass
class Kuaidi100Subscription:
    key: str
    callback_url: str
    salt: str | None
    resultv2: str | None
    subscribed_at: float


@dataclass
class KdniaoSubscription:
    account: KdniaoAccount
    callback: str | None  # the subscriber's CallBack echo value
    subscribed_at: float


@dataclass
class TraceEvent:
    step: Step
    at: float  # simulated unix time of the scan
    forced: bool = False


@dataclass
class Parcel:
    """One tracked waybill: its planned steps, what has happened so far, who hears about it."""

    carrier: Carrier
    number: str
    outcome: Outcome
    route: Route
    plan: list[Step]
    started_at: float  # simulated time the timeline starts from
    kuaidi100: Kuaidi100Subscription | None = None
    kdniao: list[KdniaoSubscription] = field(default_factory=list)
    history: list[TraceEvent] = field(default_factory=list)
    next_index: int = 0  # index into plan of the next step

    @property
    def key(self) -> tuple[str, str]:
        return (self.carrier.delivery_id, self.number)

    @property
    def finished(self) -> bool:
        return self.next_index >= len(self.plan) or bool(self.history and self.history[-1].step.is_final)

    @property
    def next_step(self) -> Step | None:
        return None if self.finished else self.plan[self.next_index]


class Channel(StrEnum):
    KUAIDI100 = "kuaidi100"
    KDNIAO = "kdniao"


class PushStatus(StrEnum):
    QUEUED = "queued"  # waiting for its first attempt or a retry
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # HTTP 200 with the format's success answer
    REJECTED = "rejected"  # any other answer
    TIMEOUT = "timeout"
    ERROR = "error"  # no connection, or the request failed


@dataclass(frozen=True)
class PushAttempt:
    number: int
    at: float
    outcome: AttemptOutcome
    status_code: int | None
    answer: str
    error: str
    duration_ms: float


@dataclass
class PushRecord:
    """One push (the body is fixed when the step happens: retries and duplicates send the same bytes)."""

    push_id: int
    channel: Channel
    parcel_key: tuple[str, str]
    number: str
    step_index: int  # position of the step in the parcel's history (0 = first scan)
    state: int  # Kuaidi100 state of the step
    url: str
    body: bytes
    queued_at: float
    duplicate_of: int | None = None
    held_back: bool = False  # sent after the next push (out-of-order fault)
    status: PushStatus = PushStatus.QUEUED
    attempts: list[PushAttempt] = field(default_factory=list)

    @property
    def lane(self) -> tuple[str, str, str, str]:
        """Pushes in one lane leave in the order queued: one receiver's view of one parcel."""
        return (self.channel.value, *self.parcel_key, self.url)


@dataclass(frozen=True)
class CallRecord:
    at: float
    method: str
    path: str
    request: dict[str, Any]
    reply: dict[str, Any]


class CarrierWorld:
    def __init__(
        self,
        *,
        clock: Clock = time.time,
        seed: int | None = None,
        faults: FaultShares | None = None,
        kdniao_accounts: list[KdniaoAccount] | None = None,
        call_limit: int = 100_000,
    ) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.faults = faults or FaultShares()
        self.waybills: dict[str, IssuedWaybill] = {}
        self.parcels: dict[tuple[str, str], Parcel] = {}
        self.kdniao_accounts: dict[str, KdniaoAccount] = {a.ebusiness_id: a for a in kdniao_accounts or []}
        self.pushes: list[PushRecord] = []
        self.calls: deque[CallRecord] = deque(maxlen=call_limit)
        self._push_ids = itertools.count(1)

    def next_push_id(self) -> int:
        return next(self._push_ids)

    def record_call(self, method: str, path: str, request: dict[str, Any], reply: dict[str, Any]) -> None:
        self.calls.append(CallRecord(self.clock(), method, path, request, reply))

    def find_parcels(self, number: str) -> list[Parcel]:
        return [p for p in self.parcels.values() if p.number == number]

    def find_pushes(
        self, *, number: str | None = None, channel: Channel | None = None, status: PushStatus | None = None
    ) -> list[PushRecord]:
        return [
            p
            for p in self.pushes
            if (number is None or p.number == number)
            and (channel is None or p.channel is channel)
            and (status is None or p.status is status)
        ]
