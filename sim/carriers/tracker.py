"""Moves each tracked parcel along its timeline and turns every new scan into pushes for its
subscribers: a Kuaidi100 callback (param + sign with the subscription's salt, full history newest
first) and a Kdniao push (RequestData + DataSign with the account's AppKey, traces oldest first).

Bodies are fixed when the scan happens, so retries and scripted duplicates carry the same bytes; an
out-of-order push is held back and sent after the next one of its lane."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import suppress
from datetime import datetime

from shared.carriers import kdniao, kuaidi100
from shared.carriers.codes import Carrier
from shared.carriers.kuaidi100 import TrackingState
from sim.carriers.pusher import Lane, Pusher
from sim.carriers.settings import CarrierSimSettings
from sim.carriers.state import (
    CarrierWorld,
    Channel,
    KdniaoSubscription,
    Kuaidi100Subscription,
    Parcel,
    PushRecord,
    TraceEvent,
)
from sim.carriers.timeline import Outcome, choose_outcome, continue_after, plan, random_route, step

FORCED_AFTER_S = 600.0  # simulated gap before a forced scan

STATE_NAMES = {
    TrackingState.IN_TRANSIT: "在途",
    TrackingState.PICKED_UP: "揽收",
    TrackingState.PROBLEM: "疑难",
    TrackingState.SIGNED: "签收",
    TrackingState.RETURN_SIGNED: "退签",
    TrackingState.OUT_FOR_DELIVERY: "派件",
    TrackingState.RETURNED: "退回",
    TrackingState.REDIRECTED: "转投",
    TrackingState.CUSTOMS: "清关",
    TrackingState.REFUSED: "拒签",
}
_OUTCOME_OF_FORCED = {
    TrackingState.PROBLEM: Outcome.PROBLEM_THEN_DELIVERED,
    TrackingState.REFUSED: Outcome.REFUSED,
    TrackingState.RETURNED: Outcome.RETURNED,
}


def beijing(at: float) -> str:
    return datetime.fromtimestamp(at, kdniao.BEIJING).strftime(kdniao.TIME_FORMAT)


class Tracker:
    def __init__(self, world: CarrierWorld, settings: CarrierSimSettings, pusher: Pusher) -> None:
        self._world = world
        self._settings = settings
        self._pusher = pusher
        self._wakes: dict[tuple[str, str], asyncio.Event] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._held: dict[Lane, PushRecord] = {}
        self._running = False

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        for parcel in self._world.parcels.values():
            self._ensure_running(parcel)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # ---- subscriptions ---------------------------------------------------------------------------

    def parcel_for(self, carrier: Carrier, number: str) -> Parcel:
        """The tracked parcel, created (with a drawn outcome and route) on first subscription."""
        key = (carrier.delivery_id, number)
        parcel = self._world.parcels.get(key)
        if parcel is None:
            rng, faults = self._world.rng, self._world.faults
            outcome = choose_outcome(
                rng, problem=faults.problem_share, returned=faults.return_share, refused=faults.refusal_share
            )
            route = random_route(rng)
            parcel = Parcel(
                carrier, number, outcome, route, plan(outcome, route), started_at=self._world.clock()
            )
            self._world.parcels[key] = parcel
        return parcel

    def is_polling(self, carrier: Carrier, number: str) -> bool:
        """Kuaidi100 answers 501 while a subscription for this waybill is still being tracked."""
        parcel = self._world.parcels.get((carrier.delivery_id, number))
        return parcel is not None and parcel.kuaidi100 is not None and not parcel.finished

    def subscribe_kuaidi100(
        self, carrier: Carrier, number: str, subscription: Kuaidi100Subscription
    ) -> Parcel:
        parcel = self.parcel_for(carrier, number)
        parcel.kuaidi100 = subscription
        if parcel.history:  # already moving (or done): the new subscriber gets the current view
            self._queue_kuaidi100(parcel, subscription)
        self._ensure_running(parcel)
        return parcel

    def subscribe_kdniao(self, carrier: Carrier, number: str, subscription: KdniaoSubscription) -> Parcel:
        parcel = self.parcel_for(carrier, number)
        known = {s.account.ebusiness_id for s in parcel.kdniao}
        if subscription.account.ebusiness_id not in known:
            parcel.kdniao.append(subscription)
            if parcel.history:
                self._queue_kdniao(parcel, subscription)
        self._ensure_running(parcel)
        return parcel

    # ---- moving the timeline ---------------------------------------------------------------------

    def advance(self, parcel: Parcel) -> TraceEvent | None:
        """The next planned scan happens now (None when the parcel's journey is over)."""
        if parcel.finished:
            return None
        event = self._emit_next(parcel)
        self._wake(parcel)
        return event

    def force(self, parcel: Parcel, state: TrackingState, context: str | None = None) -> TraceEvent:
        """A scan in `state` happens now; the rest of the plan follows from it (a forced refusal is
        followed by the return, a forced problem by a second delivery attempt, and so on)."""
        forced = step(state, parcel.route, after_s=FORCED_AFTER_S)
        if context:
            forced = dataclasses.replace(forced, context=context)
        parcel.plan = [*parcel.plan[: parcel.next_index], forced, *continue_after(state, parcel.route)]
        parcel.outcome = _OUTCOME_OF_FORCED.get(state, parcel.outcome)
        event = self._emit_next(parcel, forced=True)
        self._wake(parcel)
        return event

    def _ensure_running(self, parcel: Parcel) -> None:
        if not (self._running and self._settings.auto_advance) or parcel.finished:
            return
        task = self._tasks.get(parcel.key)
        if task is not None and not task.done():
            return
        wake = self._wakes.setdefault(parcel.key, asyncio.Event())
        self._tasks[parcel.key] = asyncio.create_task(
            self._run(parcel, wake), name=f"carrier-timeline-{parcel.number}"
        )

    def _wake(self, parcel: Parcel) -> None:
        wake = self._wakes.get(parcel.key)
        if wake is not None:
            wake.set()
        self._ensure_running(parcel)

    async def _run(self, parcel: Parcel, wake: asyncio.Event) -> None:
        while not parcel.finished:
            upcoming = parcel.next_step
            assert upcoming is not None
            wake.clear()
            try:
                async with asyncio.timeout(upcoming.after_s / self._settings.time_scale):
                    await wake.wait()
            except TimeoutError:
                self._emit_next(parcel)
            # woken: the control API moved the parcel; wait afresh for whatever is next

    def _emit_next(self, parcel: Parcel, *, forced: bool = False) -> TraceEvent:
        upcoming = parcel.plan[parcel.next_index]
        parcel.next_index += 1
        previous = parcel.history[-1].at if parcel.history else parcel.started_at
        event = TraceEvent(upcoming, at=previous + upcoming.after_s, forced=forced)
        parcel.history.append(event)
        if parcel.kuaidi100 is not None:
            self._queue_kuaidi100(parcel, parcel.kuaidi100)
        for subscription in parcel.kdniao:
            self._queue_kdniao(parcel, subscription)
        return event

    # ---- building and queueing pushes ------------------------------------------------------------

    def _queue_kuaidi100(self, parcel: Parcel, subscription: Kuaidi100Subscription) -> None:
        latest = parcel.history[-1].step
        with_status = subscription.resultv2 not in (None, "", "0")
        nodes = [
            kuaidi100.TraceNode(
                context=e.step.context,
                time=beijing(e.at),
                ftime=beijing(e.at),
                status=STATE_NAMES[e.step.state] if with_status else None,
                status_code=str(int(e.step.state)) if with_status else None,
                area_name=e.step.city if with_status else None,
            )
            for e in reversed(parcel.history)
        ]
        param = kuaidi100.CallbackParam(
            status=kuaidi100.PollStatus.SHUTDOWN if latest.is_final else kuaidi100.PollStatus.POLLING,
            billstatus="",
            message="",
            auto_check="0",
            com_old="",
            com_new="",
            last_result=kuaidi100.LastResult(
                message="ok",
                state=int(latest.state),
                status="200",
                condition="",
                ischeck=1 if latest.state is TrackingState.SIGNED else 0,
                com=parcel.carrier.kuaidi100,
                nu=parcel.number,
                data=nodes,
            ),
        )
        body = kuaidi100.callback_body(kuaidi100.to_json(param), salt=subscription.salt)
        self._queue(parcel, Channel.KUAIDI100, subscription.callback_url, body)

    def _queue_kdniao(self, parcel: Parcel, subscription: KdniaoSubscription) -> None:
        account = subscription.account
        latest = parcel.history[-1]
        request = kdniao.PushRequestData(
            ebusiness_id=account.ebusiness_id,
            push_time=beijing(latest.at),
            count=1,
            data=[
                kdniao.PushItem(
                    ebusiness_id=account.ebusiness_id,
                    shipper_code=parcel.carrier.kdniao,
                    logistic_code=parcel.number,
                    success=True,
                    reason="",
                    state=latest.step.kdniao_state,
                    state_ex=int(latest.step.kdniao_state_ex),
                    location=latest.step.city,
                    callback=subscription.callback,
                    traces=[
                        kdniao.Trace(
                            accept_time=beijing(e.at),
                            accept_station=e.step.context,
                            location=e.step.city,
                            action=str(int(e.step.kdniao_state_ex)),
                        )
                        for e in parcel.history
                    ],
                )
            ],
        )
        body = kdniao.push_body(request, app_key=account.app_key)
        self._queue(parcel, Channel.KDNIAO, account.callback_url, body)

    def _queue(self, parcel: Parcel, channel: Channel, url: str, body: bytes) -> None:
        latest = parcel.history[-1].step
        push = PushRecord(
            push_id=self._world.next_push_id(),
            channel=channel,
            parcel_key=parcel.key,
            number=parcel.number,
            step_index=len(parcel.history) - 1,
            state=int(latest.state),
            url=url,
            body=body,
            queued_at=self._world.clock(),
        )
        rng, faults = self._world.rng, self._world.faults
        held = self._held.pop(push.lane, None)
        if held is None and not latest.is_final and rng.random() < faults.out_of_order_share:
            push.held_back = True
            self._held[push.lane] = push
            return
        self._send(push)
        if held is not None:
            self._send(held)

    def _send(self, push: PushRecord) -> None:
        self._pusher.enqueue(push)
        if self._world.rng.random() < self._world.faults.duplicate_share:
            copy = dataclasses.replace(
                push, push_id=self._world.next_push_id(), duplicate_of=push.push_id, attempts=[]
            )
            self._pusher.enqueue(copy)
