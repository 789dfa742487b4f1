"""One supplier's software: follows its feed and works each dispatch order as `decisions` says.

Per dispatch order there is one work task (answer the offer, then ship, maybe in two goes) and a
short task per change request. They share a lock, so a change request is answered against what
really left the warehouse: nothing ships while a request waits for its answer, and a request that
arrives while a shipment is being reported is answered after it (already shipped).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter, OrderedDict
from collections.abc import Collection, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ValidationError

from shared.api.supplier import (
    AcceptRequest,
    DispatchOrderPublic,
    FeedChange,
    ParcelToLabel,
    ParcelToShip,
    RejectRequest,
    ReturnReceipt,
    ShipRequest,
    SupplierErrorCode,
    WaybillRequest,
    WaybillResponse,
)
from shared.events.dispatch import AftersaleInstructionKind, DispatchState, ParcelLine
from sim.suppliers.client import ApiAnswer, RetryableAnswer, SupplierApiClient
from sim.suppliers.decisions import (
    FINAL_STATES,
    REJECT_TEXT,
    AnswerOffer,
    Done,
    OrderKnowledge,
    OrderPlan,
    Ship,
    WaitForAnswers,
    absorb,
    answer_change,
    draw,
    in_warehouse,
    next_step,
    order_rng,
    own_waybills,
    parcel_weight_grams,
    plan_order,
    react,
    shipment_contents,
)
from sim.suppliers.records import ShipmentRecord, SupplierStats
from sim.suppliers.settings import Behaviour, FleetSettings, SupplierConfig

log = logging.getLogger(__name__)
FINISHED_KEPT = 100_000  # finished dispatch orders remembered, so late feed changes about them are ignored


@dataclass(eq=False)
class _Job:
    """The runtime side of one dispatch order: its knowledge plus the means to wait and serialise."""

    knowledge: OrderKnowledge
    since_cursor: int  # the feed change that began it: where a restarted bot must read from to resume it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    deadlines: dict[str, float] = field(default_factory=dict)  # step key -> loop time to act at
    needs_refresh: bool = False  # a call gave up or met a conflict: read the order before deciding
    resume_at: float = 0.0

    @property
    def path(self) -> str:
        return f"/dispatch-orders/{self.knowledge.dispatch_id}"


class SupplierBot:
    def __init__(
        self,
        config: SupplierConfig,
        settings: FleetSettings,
        *,
        seed: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.supplier_id = config.supplier_id
        self.behaviour: Behaviour = settings.behaviour_of(config)
        self._settings = settings
        self._seed = seed
        self._client = SupplierApiClient(
            settings.api_url,
            config.api_key,
            policy=settings.retry,
            timeout_s=settings.http_timeout_s,
            requests_per_s=settings.requests_per_s,
            connections=settings.connections,
            transport=transport,
            on_retry=lambda name, error: self._count(f"retry_{name}"),
        )
        self.cursor = 0
        self.counters: Counter[str] = Counter()
        self.shipments: list[ShipmentRecord] = []
        self._jobs: dict[str, _Job] = {}
        self._finished: OrderedDict[str, int] = OrderedDict()  # dispatch id -> its last version
        self._receipts: set[tuple[str, str]] = set()  # (dispatch id, case id) returns being confirmed
        self._receipts_open: dict[tuple[str, str], int] = {}  # ... not confirmed yet -> feed cursor seen at
        self._tasks: set[asyncio.Task[None]] = set()
        self._feed_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._feed_task is None:
            self._feed_task = asyncio.create_task(self._follow_feed(), name=f"supplier-{self.supplier_id}")

    async def stop(self) -> None:
        tasks = [t for t in (self._feed_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feed_task = None
        await self._client.aclose()

    def resume_cursor(self) -> int:
        """Where a restarted bot reads its feed from, as a supplier's integration saves it: past every
        change handled, except those of work still open (read again, it is resumed; the bot's calls
        are idempotent and a finished order's replayed changes are dropped)."""
        open_since = [job.since_cursor for job in self._jobs.values()]
        open_since.extend(self._receipts_open.values())
        return min([self.cursor, *open_since])

    def stats(self) -> SupplierStats:
        return SupplierStats(
            supplier_id=self.supplier_id,
            cursor=self.cursor,
            active_orders=len(self._jobs),
            counters=dict(sorted(self.counters.items())),
            shipments=list(self.shipments),
        )

    # --- the feed ----------------------------------------------------------------------------------

    async def _follow_feed(self) -> None:
        """Long-poll forever; a failed poll (after the client's own retries) waits and tries again."""
        failures = 0
        while True:
            try:
                page = await self._client.feed(
                    self.cursor, self._settings.feed_wait_s, self._settings.feed_limit
                )
            except (httpx.HTTPError, RetryableAnswer, RuntimeError, ValidationError) as exc:
                failures += 1
                self._count("feed_errors")
                log.warning("%s: feed poll failed (%r)", self.supplier_id, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            failures = 0
            self._count("feed_polls")
            for change in page.changes:
                self._on_change(change)
                self.cursor = max(self.cursor, change.cursor)
            self.cursor = max(self.cursor, page.next_cursor)

    def _on_change(self, change: FeedChange) -> None:
        self._count("feed_changes")
        snapshot = change.dispatch_order
        self._expect_returns(snapshot, change.cursor)  # also on shipped (finished) dispatch orders
        job = self._jobs.get(snapshot.dispatch_id)
        if job is None and (
            snapshot.state in FINAL_STATES or snapshot.version <= self._finished.get(snapshot.dispatch_id, 0)
        ):
            # Finished business: a replay, a last word after the bot was done, or an older change the
            # feed delivers after the bot's own calls already took the order to its end.
            return
        reaction = react(job.knowledge if job else None, change, lambda: self._plan(snapshot.dispatch_id))
        if job is None:
            job = self._jobs[snapshot.dispatch_id] = _Job(reaction.knowledge, since_cursor=change.cursor - 1)
            self._count("offers_seen" if change.change == "dispatch_offered" else "orders_resumed")
        job.knowledge = reaction.knowledge
        job.wake.set()
        if reaction.start_work:
            self._spawn(self._work(job), f"work-{snapshot.dispatch_id}")
        for request in reaction.answer:
            self._count(f"change_requests_{request.kind.value}")
            self._spawn(self._answer(job, request.request_id), f"answer-{request.request_id}")

    def _plan(self, dispatch_id: str) -> OrderPlan:
        return plan_order(self.behaviour, order_rng(self._seed, self.supplier_id, dispatch_id, "plan"))

    # --- working one dispatch order ----------------------------------------------------------------

    async def _work(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if job.needs_refresh and not job.knowledge.abandoned:
                    if loop.time() < job.resume_at:
                        await self._wait(job, job.resume_at - loop.time())
                        continue
                    await self._refresh(job)
                step = next_step(job.knowledge)
                if isinstance(step, Done):
                    self._count(f"finished_{step.reason.replace(' ', '_')}")
                    return
                if isinstance(step, WaitForAnswers):
                    await self._wait(job, None)
                    continue
                deadline = job.deadlines.setdefault(
                    step.key, loop.time() + self._settings.scaled(step.delay_s)
                )
                if loop.time() < deadline:
                    await self._wait(job, deadline - loop.time())
                    continue
                async with job.lock:
                    if next_step(job.knowledge) != step:
                        continue  # something changed while the lock was taken: decide again
                    if isinstance(step, AnswerOffer):
                        await self._answer_offer(job, step)
                    else:
                        await self._ship(job, step)
        finally:
            order = job.knowledge.order
            if order.state in FINAL_STATES and self._jobs.get(order.dispatch_id) is job:
                del self._jobs[order.dispatch_id]
                self._finished[order.dispatch_id] = order.version
                while len(self._finished) > FINISHED_KEPT:
                    self._finished.popitem(last=False)

    async def _wait(self, job: _Job, timeout_s: float | None) -> None:
        """Until the timeout, or until news about this order arrives."""
        job.wake.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await job.wake.wait()
        except TimeoutError:
            pass

    async def _answer_offer(self, job: _Job, step: AnswerOffer) -> None:
        plan = job.knowledge.plan
        body: BaseModel
        if step.rejection is None:
            eta = datetime.now(UTC) + timedelta(seconds=self._settings.scaled(plan.ship_delay_s))
            action, body = "accept", AcceptRequest(estimated_ship_at=eta)
        else:
            action, body = "reject", RejectRequest(reason=step.rejection, text=REJECT_TEXT[step.rejection])
        answer = await self._command(job, f"{job.path}/{action}", body)
        if answer is None:
            return
        if answer.ok:
            job.knowledge = absorb(job.knowledge, answer.dispatch_order())
            self._count("accepted" if step.rejection is None else f"rejected_{step.rejection.value}")
        else:
            self._refused(job, action, answer)

    async def _ship(self, job: _Job, step: Ship) -> None:
        """Print labels, hand the parcels to the carrier, report them."""
        knowledge = job.knowledge
        rng = order_rng(
            self._seed,
            self.supplier_id,
            knowledge.dispatch_id,
            "ship",
            step.parcels_before,
            knowledge.failures,
        )
        contents = shipment_contents(
            in_warehouse(knowledge),
            partial=knowledge.plan.partial and step.parcels_before == 0,
            split=knowledge.plan.split,
            max_parcels=self.behaviour.max_parcels,
            rng=rng,
        )
        if not contents:
            return
        in_transit: Counter[int] = Counter()
        for parcel in contents:
            in_transit.update({line.line_no: line.quantity for line in parcel})
        job.knowledge = replace(knowledge, in_transit=dict(in_transit))
        try:
            labels = await self._labels(job, contents, rng)
            if labels is None:
                return
            waybills, source = labels
            parcels = [
                ParcelToShip(carrier_code=carrier, waybill_no=number, lines=lines)
                for (carrier, number), lines in zip(waybills, contents, strict=True)
            ]
            answer = await self._command(job, f"{job.path}/shipments", ShipRequest(parcels=parcels))
            if answer is None:
                return
            if not answer.ok:
                self._refused(job, "ship", answer)
                return
            job.knowledge = absorb(job.knowledge, answer.dispatch_order())
            self.shipments.append(
                ShipmentRecord(
                    supplier_id=self.supplier_id,
                    dispatch_id=knowledge.dispatch_id,
                    order_id=knowledge.order.order_id,
                    parcels=parcels,
                    waybill_source=source,
                    reported_at=datetime.now(UTC),
                )
            )
            self._count("shipments")
            self._count("parcels", len(parcels))
            self._count("units_shipped", sum(in_transit.values()))
            if len(parcels) > 1:
                self._count("split_shipments")
            if job.knowledge.order.state != DispatchState.SHIPPED:
                self._count("partial_shipments")
        finally:
            job.knowledge = replace(job.knowledge, in_transit={})

    async def _labels(
        self, job: _Job, contents: list[list[ParcelLine]], rng: random.Random
    ) -> tuple[list[tuple[str, str]], Literal["own", "logistics"]] | None:
        """Waybill numbers per parcel: from logistics when configured and up, else the supplier's own
        (from its carrier account). None: dispatch refused (the order changed); decide again."""
        knowledge = job.knowledge
        carrier = knowledge.plan.carrier
        if self.behaviour.request_waybills:
            self._count("waybills_requested")
            request = WaybillRequest(
                carrier_code=carrier,
                parcels=[
                    ParcelToLabel(lines=lines, weight_grams=parcel_weight_grams(lines, rng))
                    for lines in contents
                ],
            )
            answer = await self._command(job, f"{job.path}/waybills", request, no_retry={503}, fatal=False)
            if answer is not None and answer.ok:
                try:
                    issued = sorted(
                        WaybillResponse.model_validate(answer.body).waybills, key=lambda w: w.parcel_no
                    )
                except ValidationError:
                    issued = []
                if len(issued) == len(contents):
                    self._count("waybills_issued", len(issued))
                    return [(w.carrier_code, w.waybill_no) for w in issued], "logistics"
            elif answer is not None and answer.status == 409:
                self._refused(job, "waybills", answer)
                return None
            self._count("waybill_fallbacks")
        used = [p.waybill_no for p in knowledge.order.parcels]
        return [(carrier, n) for n in own_waybills(carrier, len(contents), rng, used)], "own"

    async def _answer(self, job: _Job, request_id: str) -> None:
        """A change request: answered promptly, against what has really left the warehouse."""
        try:
            rng = order_rng(self._seed, self.supplier_id, job.knowledge.dispatch_id, "answer", request_id)
            delay = draw(rng, self.behaviour.answer_delay.min_s, self.behaviour.answer_delay.max_s)
            await asyncio.sleep(self._settings.scaled(delay))
            async with job.lock:
                decision = answer_change(job.knowledge, request_id)
                if decision is None:
                    self._count("change_requests_closed_meanwhile")
                    return
                path = f"{job.path}/change-requests/{request_id}/answer"
                answer = await self._command(job, path, decision, fatal=False)
                if answer is None:
                    return
                if answer.ok:
                    job.knowledge = absorb(job.knowledge, answer.dispatch_order())
                    outcome = (
                        decision.decision if decision.refusal is None else f"refused_{decision.refusal.value}"
                    )
                    self._count(f"change_{outcome}")
                elif answer.error_code() == SupplierErrorCode.CHANGE_REQUEST_NOT_OPEN:
                    self._count("change_requests_closed_meanwhile")
                    job.needs_refresh = True
                else:
                    self._refused(job, "answer", answer)
        finally:
            job.knowledge = replace(
                job.knowledge,
                answering=job.knowledge.answering - {request_id},
                answered=job.knowledge.answered | {request_id},
            )
            job.wake.set()

    # --- after-sale returns -------------------------------------------------------------------------

    def _expect_returns(self, snapshot: DispatchOrderPublic, cursor: int) -> None:
        """A return the buyer has shipped back (return_expected with its waybill): confirm receipt once
        it has arrived, once per case."""
        if not self.behaviour.confirm_returns:
            return
        for instruction in snapshot.aftersale_instructions:
            key = (snapshot.dispatch_id, instruction.case_id)
            if (
                instruction.kind != AftersaleInstructionKind.RETURN_EXPECTED
                or instruction.return_waybill is None
                or instruction.done_at is not None
                or key in self._receipts
            ):
                continue
            self._receipts.add(key)
            self._receipts_open[key] = cursor - 1
            self._count("returns_expected")
            self._spawn(self._confirm_receipt(*key), f"receipt-{instruction.case_id}")

    async def _confirm_receipt(self, dispatch_id: str, case_id: str) -> None:
        await self._send_receipt(dispatch_id, case_id)
        # Not reached when the bot stops first: still open, a restarted bot reads its change again.
        self._receipts_open.pop((dispatch_id, case_id), None)

    async def _send_receipt(self, dispatch_id: str, case_id: str) -> None:
        rng = order_rng(self._seed, self.supplier_id, dispatch_id, "receipt", case_id)
        delay = draw(rng, self.behaviour.receipt_delay.min_s, self.behaviour.receipt_delay.max_s)
        await asyncio.sleep(self._settings.scaled(delay))
        path = f"/dispatch-orders/{dispatch_id}/aftersale/{case_id}/receipt"
        key = f"{self.supplier_id}-{uuid.uuid4().hex}"
        for attempt in range(self._settings.max_failures_per_order + 1):
            try:
                answer = await self._client.post(path, ReturnReceipt(condition="intact"), idempotency_key=key)
            except (httpx.HTTPError, RetryableAnswer) as exc:
                self._count("gave_up")
                log.warning("%s: POST %s gave up (%r), attempt %d", self.supplier_id, path, exc, attempt + 1)
                await asyncio.sleep(self._settings.failure_pause_s)
                continue
            if answer.ok:
                self._count("returns_confirmed")
            elif answer.error_code() == SupplierErrorCode.RETURN_ALREADY_CONFIRMED:
                self._count("returns_already_confirmed")
            else:
                self._count(f"error_receipt_{answer.status}_{answer.code or answer.status}")
                log.error("%s: receipt %s answered %s %s", self.supplier_id, path, answer.status, answer.body)
            return
        self._count("returns_unconfirmed")

    # --- calls and their outcomes ------------------------------------------------------------------

    async def _command(
        self,
        job: _Job,
        path: str,
        body: BaseModel,
        *,
        no_retry: Collection[int] = (),
        fatal: bool = True,
    ) -> ApiAnswer | None:
        """One POST with a fresh Idempotency-Key (kept over its retries). None: it gave up; with
        `fatal` that counts as a failure of the dispatch order (read it again, later)."""
        key = f"{self.supplier_id}-{uuid.uuid4().hex}"
        try:
            return await self._client.post(path, body, idempotency_key=key, no_retry=no_retry)
        except (httpx.HTTPError, RetryableAnswer) as exc:
            self._count("gave_up")
            log.warning("%s: POST %s gave up (%r)", self.supplier_id, path, exc)
            if fatal:
                self._failed(job)
            return None

    def _refused(self, job: _Job, action: str, answer: ApiAnswer) -> None:
        """A 409 is the order's state answering (cancelled meanwhile, changed, shipped): read it and
        decide again. Anything else means the bot is wrong about this order: leave it alone."""
        code = answer.code or str(answer.status)
        if answer.status == 409:
            self._count(f"conflict_{action}_{code}")
            self._failed(job)
            return
        self._count(f"error_{action}_{answer.status}_{code}")
        log.error("%s: %s %s answered %s %s", self.supplier_id, action, job.path, answer.status, answer.body)
        job.knowledge = replace(job.knowledge, abandoned=True)
        self._count("abandoned")

    def _failed(self, job: _Job) -> None:
        knowledge = replace(job.knowledge, failures=job.knowledge.failures + 1)
        if knowledge.failures > self._settings.max_failures_per_order:
            knowledge = replace(knowledge, abandoned=True)
            self._count("abandoned")
        job.knowledge = knowledge
        job.needs_refresh = True
        job.resume_at = asyncio.get_running_loop().time() + self._settings.failure_pause_s
        job.wake.set()

    async def _refresh(self, job: _Job) -> None:
        try:
            order = await self._client.get_order(job.knowledge.dispatch_id)
        except (httpx.HTTPError, RetryableAnswer) as exc:
            log.warning("%s: reading %s failed (%r)", self.supplier_id, job.path, exc)
            self._failed(job)
            return
        job.needs_refresh = False
        if order is not None:
            job.knowledge = absorb(job.knowledge, order)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._count("bugs")
            log.error("%s: task %s failed", self.supplier_id, task.get_name(), exc_info=task.exception())

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n
