"""Parcel tracking: source codes to one state model, and merging traces that arrive duplicated,
re-sent whole, out of order or in any batching."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from services.logistics.domain.tracking import (
    ParcelTracking,
    TrackingUpdate,
    apply_entries,
    moves_whereabouts,
    parcel_key,
    state_of,
)
from shared.events.logistics import ParcelTrackingChanged, TraceEntry, TrackingSource, TrackingState
from tests.unit.logistics.builders import CARRIER, ORDER_ID, PARCEL, SHOP, WAYBILL, at, entry, tracking

S = TrackingState
NOW = at(1000)

# ---------------------------------------------------------------------------------------------------
# state_of: every documented code of every source (wechat-shop.md sections 2 and 4)
# ---------------------------------------------------------------------------------------------------

WECHAT_DOC: dict[int, TrackingState] = {
    0: S.AWAITING_PICKUP,  # awaiting pickup
    1: S.PICKED_UP,  # picked up
    2: S.IN_TRANSIT,  # in transit
    3: S.OUT_FOR_DELIVERY,  # out for delivery
    4: S.OUT_FOR_DELIVERY,  # in locker: waiting for the buyer, not yet delivered
    5: S.DELIVERED,  # signed
    6: S.RETURNED,  # returned
    7: S.IN_TRANSIT,  # forwarded
    8: S.EXCEPTION,  # exception
    9: S.DELIVERED,  # out of locker: the buyer took it
}
KUAIDI100_DOC: dict[int, TrackingState] = {
    0: S.IN_TRANSIT,  # in transit
    1: S.PICKED_UP,  # picked up
    2: S.EXCEPTION,  # problem
    3: S.DELIVERED,  # signed
    4: S.RETURNED,  # return-signed: the sender has it back
    5: S.OUT_FOR_DELIVERY,  # out for delivery
    6: S.IN_TRANSIT,  # returned (退回): still on its way back to the sender
    7: S.IN_TRANSIT,  # redirected
    8: S.IN_TRANSIT,  # customs
    14: S.EXCEPTION,  # refused
}
KDNIAO_DOC: dict[int, TrackingState] = {
    0: S.AWAITING_PICKUP,  # no trace yet
    1: S.PICKED_UP,
    2: S.IN_TRANSIT,
    3: S.DELIVERED,  # signed
    4: S.EXCEPTION,  # problem
}
DOCUMENTED: dict[TrackingSource, dict[int, TrackingState]] = {
    TrackingSource.WECHAT_EWAYBILL: WECHAT_DOC,
    TrackingSource.KUAIDI100: KUAIDI100_DOC,
    TrackingSource.KDNIAO: KDNIAO_DOC,
}


@pytest.mark.parametrize(("code", "expected"), sorted(WECHAT_DOC.items()))
def test_wechat_ewaybill_status(code: int, expected: TrackingState) -> None:
    assert state_of(TrackingSource.WECHAT_EWAYBILL, code) is expected


@pytest.mark.parametrize(("code", "expected"), sorted(KUAIDI100_DOC.items()))
def test_kuaidi100_state(code: int, expected: TrackingState) -> None:
    assert state_of(TrackingSource.KUAIDI100, code) is expected


@pytest.mark.parametrize(("code", "expected"), sorted(KDNIAO_DOC.items()))
def test_kdniao_state(code: int, expected: TrackingState) -> None:
    assert state_of(TrackingSource.KDNIAO, code) is expected


def test_wechat_99_unknown_is_kept_out_of_the_state() -> None:
    assert state_of(TrackingSource.WECHAT_EWAYBILL, 99) is None


@pytest.mark.parametrize("source", list(TrackingSource))
@pytest.mark.parametrize("code", [-1, 10, 11, 13, 15, 99, 100, 2**31])
def test_undocumented_codes_are_none(source: TrackingSource, code: int) -> None:
    assert code not in DOCUMENTED[source]
    assert state_of(source, code) is None


@pytest.mark.parametrize("source", list(TrackingSource))
def test_exactly_the_documented_codes_have_a_state(source: TrackingSource) -> None:
    known = {code for code in range(-5, 200) if state_of(source, code) is not None}
    assert known == set(DOCUMENTED[source])


def test_same_code_means_different_things_per_source() -> None:
    assert state_of(TrackingSource.WECHAT_EWAYBILL, 0) is S.AWAITING_PICKUP
    assert state_of(TrackingSource.KUAIDI100, 0) is S.IN_TRANSIT
    assert state_of(TrackingSource.KDNIAO, 0) is S.AWAITING_PICKUP
    assert state_of(TrackingSource.WECHAT_EWAYBILL, 3) is S.OUT_FOR_DELIVERY
    assert state_of(TrackingSource.KUAIDI100, 3) is S.DELIVERED
    assert state_of(TrackingSource.KDNIAO, 3) is S.DELIVERED
    assert state_of(TrackingSource.WECHAT_EWAYBILL, 4) is S.OUT_FOR_DELIVERY
    assert state_of(TrackingSource.KUAIDI100, 4) is S.RETURNED
    assert state_of(TrackingSource.KDNIAO, 4) is S.EXCEPTION


# ---------------------------------------------------------------------------------------------------
# the parcel itself
# ---------------------------------------------------------------------------------------------------


def test_new_tracking_awaits_pickup_at_version_1_with_no_trace() -> None:
    fresh = tracking()
    assert fresh.state is S.AWAITING_PICKUP
    assert fresh.version == 1
    assert fresh.trace == []
    assert fresh.last_update_at is None


def test_key_is_carrier_and_waybill() -> None:
    assert tracking().key == f"{CARRIER}:{WAYBILL}" == parcel_key(CARRIER, WAYBILL)


# ---------------------------------------------------------------------------------------------------
# apply_entries: a new entry
# ---------------------------------------------------------------------------------------------------


def test_new_entry_changes_state_and_emits_one_event() -> None:
    before = tracking()
    picked = entry(1, S.PICKED_UP, "【广州】快递员已揽收")

    update = apply_entries(before, [picked], now=NOW)

    assert update.changed is True
    after = update.tracking
    assert after.state is S.PICKED_UP
    assert after.version == 2
    assert after.trace == [picked]
    assert after.last_update_at == picked.at
    assert (after.shop_id, after.order_id, after.parcel, after.registered_at) == (
        before.shop_id,
        before.order_id,
        before.parcel,
        before.registered_at,
    )
    assert len(update.events) == 1
    event = update.events[0]
    assert isinstance(event, ParcelTrackingChanged)
    assert event.state is S.PICKED_UP
    assert event.previous_state is S.AWAITING_PICKUP
    assert event.version == 2
    assert event.latest == picked
    assert event.order_id == ORDER_ID
    assert event.shop_id == SHOP
    assert event.parcel == PARCEL
    assert event.occurred_at == NOW
    assert event.kafka_key == ORDER_ID.encode()


def test_the_input_tracking_is_left_untouched() -> None:
    before = tracking()
    snapshot = before.model_copy(deep=True)
    apply_entries(before, [entry(1, S.PICKED_UP)], now=NOW)
    assert before == snapshot


def test_each_state_change_bumps_the_version_by_one_and_names_the_previous_state() -> None:
    current = tracking()
    steps = [
        entry(1, S.PICKED_UP),
        entry(5, S.IN_TRANSIT),
        entry(20, S.OUT_FOR_DELIVERY),
        entry(22, S.DELIVERED),
    ]
    events: list[ParcelTrackingChanged] = []
    for step in steps:
        update = apply_entries(current, [step], now=NOW)
        assert len(update.events) == 1
        events.extend(update.events)
        current = update.tracking

    assert [e.version for e in events] == [2, 3, 4, 5]
    assert [e.previous_state for e in events] == [
        S.AWAITING_PICKUP,
        S.PICKED_UP,
        S.IN_TRANSIT,
        S.OUT_FOR_DELIVERY,
    ]
    assert [e.state for e in events] == [S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.DELIVERED]
    assert [e.latest for e in events] == steps
    assert current.version == 5
    assert current.state is S.DELIVERED
    assert current.trace == steps


def test_a_batch_of_several_new_entries_emits_one_event_with_the_newest_entry() -> None:
    picked, moving, out = entry(1, S.PICKED_UP), entry(5, S.IN_TRANSIT), entry(20, S.OUT_FOR_DELIVERY)

    # Kuaidi100 lists newest first: the batch order must not matter.
    update = apply_entries(tracking(), [out, picked, moving], now=NOW)

    assert update.tracking.state is S.OUT_FOR_DELIVERY
    assert update.tracking.version == 2
    assert update.tracking.trace == [picked, moving, out]
    assert update.tracking.last_update_at == out.at
    assert len(update.events) == 1
    assert update.events[0].latest == out
    assert update.events[0].previous_state is S.AWAITING_PICKUP
    assert update.events[0].version == 2


def test_new_entry_in_the_same_state_grows_the_trace_without_an_event() -> None:
    first = entry(5, S.IN_TRANSIT, "到达【广州转运中心】")
    start = apply_entries(tracking(), [first], now=NOW).tracking
    second = entry(9, S.IN_TRANSIT, "离开【广州转运中心】")

    update = apply_entries(start, [second], now=NOW)

    assert update.changed is True
    assert update.events == []
    assert update.tracking.state is S.IN_TRANSIT
    assert update.tracking.version == start.version
    assert update.tracking.trace == [first, second]
    assert update.tracking.last_update_at == second.at


def test_awaiting_pickup_entry_on_a_new_parcel_is_no_state_change() -> None:
    waiting = entry(0.5, S.AWAITING_PICKUP, source=TrackingSource.WECHAT_EWAYBILL)
    update = apply_entries(tracking(), [waiting], now=NOW)
    assert update.changed is True
    assert update.events == []
    assert update.tracking.version == 1
    assert update.tracking.trace == [waiting]
    assert update.tracking.last_update_at == waiting.at


def test_newest_entry_decides_the_state_even_when_it_is_less_far_along() -> None:
    """A failed delivery attempt: the carrier's newest entry takes the parcel back to in transit."""
    out = entry(20, S.OUT_FOR_DELIVERY)
    start = apply_entries(tracking(), [entry(1, S.PICKED_UP), out], now=NOW).tracking
    back = entry(26, S.IN_TRANSIT, "派送不成功，返回网点")

    update = apply_entries(start, [back], now=NOW)

    assert update.tracking.state is S.IN_TRANSIT
    assert len(update.events) == 1
    assert update.events[0].previous_state is S.OUT_FOR_DELIVERY
    assert update.events[0].version == start.version + 1


# ---------------------------------------------------------------------------------------------------
# duplicates
# ---------------------------------------------------------------------------------------------------

WHOLE = [
    entry(1, S.PICKED_UP),
    entry(5, S.IN_TRANSIT, "到达【广州转运中心】"),
    entry(9, S.IN_TRANSIT, "离开【广州转运中心】"),
    entry(20, S.OUT_FOR_DELIVERY),
]


def _assert_nothing_happened(update: TrackingUpdate, before: ParcelTracking) -> None:
    assert update.changed is False
    assert update.events == []
    assert update.tracking == before


def test_empty_batch_changes_nothing() -> None:
    before = apply_entries(tracking(), WHOLE, now=NOW).tracking
    _assert_nothing_happened(apply_entries(before, [], now=NOW), before)


def test_same_entries_again_change_nothing() -> None:
    before = apply_entries(tracking(), WHOLE, now=NOW).tracking
    _assert_nothing_happened(apply_entries(before, list(WHOLE), now=at(2000)), before)


def test_one_old_entry_again_changes_nothing() -> None:
    before = apply_entries(tracking(), WHOLE, now=NOW).tracking
    _assert_nothing_happened(apply_entries(before, [WHOLE[0]], now=NOW), before)


def test_equal_but_not_identical_entries_are_duplicates() -> None:
    before = apply_entries(tracking(), WHOLE, now=NOW).tracking
    copies = [TraceEntry.model_validate(e.model_dump()) for e in WHOLE]
    assert all(c is not e for c, e in zip(copies, WHOLE, strict=True))
    _assert_nothing_happened(apply_entries(before, copies, now=NOW), before)


def test_kuaidi100_resending_the_whole_trace_newest_first_changes_nothing() -> None:
    current = tracking()
    events: list[ParcelTrackingChanged] = []
    # Kuaidi100 pushes lastResult.data newest first, each push the whole trace so far.
    for n in range(1, len(WHOLE) + 1):
        update = apply_entries(current, list(reversed(WHOLE[:n])), now=NOW)
        events.extend(update.events)
        current = update.tracking

    assert current.trace == WHOLE
    assert current.state is S.OUT_FOR_DELIVERY
    assert [e.state for e in events] == [S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY]
    assert [e.version for e in events] == [2, 3, 4]
    _assert_nothing_happened(apply_entries(current, list(reversed(WHOLE)), now=NOW), current)


def test_whole_trace_resent_with_one_new_entry_adds_only_that_entry() -> None:
    before = apply_entries(tracking(), WHOLE, now=NOW).tracking
    delivered = entry(22, S.DELIVERED, "已签收，签收人：本人")

    update = apply_entries(before, [delivered, *reversed(WHOLE)], now=NOW)

    assert update.tracking.trace == [*WHOLE, delivered]
    assert update.tracking.state is S.DELIVERED
    assert update.tracking.version == before.version + 1
    assert len(update.events) == 1
    assert update.events[0].latest == delivered
    assert update.events[0].previous_state is S.OUT_FOR_DELIVERY


def test_same_time_and_state_with_different_text_is_a_new_entry() -> None:
    first = entry(5, S.IN_TRANSIT, "到达【广州转运中心】")
    before = apply_entries(tracking(), [first], now=NOW).tracking
    other = entry(5, S.IN_TRANSIT, "到达【深圳转运中心】")

    update = apply_entries(before, [other], now=NOW)

    assert update.changed is True
    assert update.events == []
    assert set(update.tracking.trace) == {first, other}


def test_duplicates_within_one_batch_are_stored_once() -> None:
    picked = entry(1, S.PICKED_UP)

    update = apply_entries(tracking(), [picked, picked], now=NOW)

    assert update.tracking.trace == [picked]


def test_batching_of_a_duplicated_entry_does_not_change_the_trace() -> None:
    picked = entry(1, S.PICKED_UP)
    one_batch = apply_entries(tracking(), [picked, picked], now=NOW).tracking
    first = apply_entries(tracking(), [picked], now=NOW).tracking
    two_batches = apply_entries(first, [picked], now=NOW).tracking

    assert one_batch.trace == two_batches.trace


# ---------------------------------------------------------------------------------------------------
# out of order
# ---------------------------------------------------------------------------------------------------


def test_older_entry_arriving_late_extends_the_trace_but_keeps_the_state() -> None:
    picked, out = entry(1, S.PICKED_UP), entry(20, S.OUT_FOR_DELIVERY)
    before = apply_entries(tracking(), [picked, out], now=NOW).tracking
    late = entry(5, S.IN_TRANSIT)

    update = apply_entries(before, [late], now=NOW)

    assert update.changed is True
    assert update.events == []
    assert update.tracking.state is S.OUT_FOR_DELIVERY
    assert update.tracking.version == before.version
    assert update.tracking.trace == [picked, late, out]
    assert update.tracking.last_update_at == out.at


@pytest.mark.parametrize("late_state", [S.AWAITING_PICKUP, S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY])
def test_delivered_parcel_never_goes_back_for_older_entries(late_state: TrackingState) -> None:
    delivered = entry(30, S.DELIVERED)
    before = apply_entries(tracking(), [entry(1, S.PICKED_UP), delivered], now=NOW).tracking

    update = apply_entries(before, [entry(10, late_state, "late")], now=NOW)

    assert update.tracking.state is S.DELIVERED
    assert update.tracking.version == before.version
    assert update.events == []
    assert update.tracking.last_update_at == delivered.at


def test_newer_and_older_entries_in_one_batch() -> None:
    picked, out = entry(1, S.PICKED_UP), entry(20, S.OUT_FOR_DELIVERY)
    before = apply_entries(tracking(), [picked, out], now=NOW).tracking
    late, delivered = entry(5, S.IN_TRANSIT), entry(22, S.DELIVERED)

    update = apply_entries(before, [late, delivered], now=NOW)

    assert update.tracking.trace == [picked, late, out, delivered]
    assert update.tracking.state is S.DELIVERED
    assert len(update.events) == 1
    assert update.events[0].latest == delivered
    assert update.events[0].previous_state is S.OUT_FOR_DELIVERY


def test_trace_stays_sorted_by_time_whatever_the_arrival_order() -> None:
    entries = [entry(h, S.IN_TRANSIT, f"step {h}") for h in (1, 2, 3, 5, 8, 13, 21)]
    current = tracking()
    for index in (4, 0, 6, 2, 1, 5, 3):
        current = apply_entries(current, [entries[index]], now=NOW).tracking
        times = [e.at for e in current.trace]
        assert times == sorted(times)
    assert current.trace == entries
    assert current.last_update_at == entries[-1].at


# ---------------------------------------------------------------------------------------------------
# same carrier time: the further-along state wins
# ---------------------------------------------------------------------------------------------------

FURTHER_ALONG = [
    (S.AWAITING_PICKUP, S.PICKED_UP),
    (S.PICKED_UP, S.IN_TRANSIT),
    (S.IN_TRANSIT, S.OUT_FOR_DELIVERY),
    (S.OUT_FOR_DELIVERY, S.DELIVERED),
    (S.IN_TRANSIT, S.DELIVERED),
    (S.PICKED_UP, S.DELIVERED),
    (S.OUT_FOR_DELIVERY, S.EXCEPTION),
    (S.EXCEPTION, S.DELIVERED),
    (S.DELIVERED, S.RETURNED),
]


@pytest.mark.parametrize(("behind", "ahead"), FURTHER_ALONG)
def test_same_time_in_one_batch_resolves_to_the_further_state(
    behind: TrackingState, ahead: TrackingState
) -> None:
    a, b = entry(10, behind, "a"), entry(10, ahead, "b")
    for batch in ([a, b], [b, a]):
        update = apply_entries(tracking(), batch, now=NOW)
        assert update.tracking.trace == [a, b]
        assert update.tracking.state is ahead
        assert update.events[-1].latest == b


@pytest.mark.parametrize(("behind", "ahead"), FURTHER_ALONG)
def test_same_time_across_batches_resolves_to_the_further_state(
    behind: TrackingState, ahead: TrackingState
) -> None:
    a, b = entry(10, behind, "a"), entry(10, ahead, "b")
    base = apply_entries(tracking(), [entry(1, S.PICKED_UP, "start")], now=NOW).tracking

    ahead_first = apply_entries(base, [b], now=NOW).tracking
    then_behind = apply_entries(ahead_first, [a], now=NOW)
    assert then_behind.tracking.state is ahead
    assert then_behind.events == []
    assert then_behind.tracking.version == ahead_first.version

    behind_first = apply_entries(base, [a], now=NOW).tracking
    then_ahead = apply_entries(behind_first, [b], now=NOW).tracking
    assert then_ahead.state is ahead
    assert then_ahead.trace == then_behind.tracking.trace


def test_same_time_and_state_order_does_not_depend_on_arrival() -> None:
    arrived = entry(5, S.IN_TRANSIT, "到达【广州转运中心】")
    left = entry(5, S.IN_TRANSIT, "离开【广州转运中心】")

    one = apply_entries(tracking(), [arrived, left], now=NOW)
    other = apply_entries(tracking(), [left, arrived], now=NOW)

    assert one.tracking.trace == other.tracking.trace
    assert one.events[0].latest == other.events[0].latest


# ---------------------------------------------------------------------------------------------------
# property: order independence
# ---------------------------------------------------------------------------------------------------

TEXTS = ["揽收", "到达", "离开", "派送中", "签收"]


@st.composite
def entry_sets(draw: st.DrawFn, *, unique_sort_keys: bool) -> list[TraceEntry]:
    """Distinct entries on a small time grid, so equal carrier times are common."""
    raw = draw(
        st.lists(
            st.tuples(st.integers(0, 6), st.sampled_from(list(S)), st.sampled_from(TEXTS)),
            min_size=1,
            max_size=8,
            unique_by=(lambda t: (t[0], t[1])) if unique_sort_keys else (lambda t: t),
        )
    )
    return [entry(hours, state, text) for hours, state, text in raw]


@st.composite
def deliveries(draw: st.DrawFn, entries: list[TraceEntry], *, dups_in_batch: bool) -> list[list[TraceEntry]]:
    """The entries (each at least once, some several times) shuffled and cut into batches."""
    extra = draw(st.lists(st.sampled_from(entries), max_size=8))
    stream = draw(st.permutations([*entries, *extra]))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=len(stream))))
    batches = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True) if stream[i:j]]
    if not dups_in_batch:
        batches = [list(dict.fromkeys(batch)) for batch in batches]
    return batches


def _replay(
    batches: list[list[TraceEntry]], now: datetime
) -> tuple[ParcelTracking, list[ParcelTrackingChanged]]:
    current = tracking()
    events: list[ParcelTrackingChanged] = []
    for batch in batches:
        update = apply_entries(current, batch, now=now)
        for event in update.events:
            assert event.version == current.version + 1
            assert event.previous_state is current.state
        events.extend(update.events)
        current = update.tracking
    return current, events


def _expected(entries: list[TraceEntry]) -> tuple[list[TraceEntry], TrackingState]:
    order = [S.AWAITING_PICKUP, S.PICKED_UP, S.IN_TRANSIT, S.OUT_FOR_DELIVERY, S.EXCEPTION, S.DELIVERED]
    order.append(S.RETURNED)
    trace = sorted(dict.fromkeys(entries), key=lambda e: (e.at, order.index(e.state)))
    return trace, trace[-1].state


@settings(max_examples=200, deadline=None)
@given(data=st.data(), entries=entry_sets(unique_sort_keys=True))
def test_any_order_and_batching_gives_the_same_trace_and_state(
    data: st.DataObject, entries: list[TraceEntry]
) -> None:
    trace, state = _expected(entries)
    first, first_events = _replay(data.draw(deliveries(entries, dups_in_batch=False)), NOW)
    second, second_events = _replay(data.draw(deliveries(entries, dups_in_batch=False)), NOW)

    for result, events in ((first, first_events), (second, second_events)):
        assert result.trace == trace
        assert result.state is state
        assert result.last_update_at == trace[-1].at
        assert result.version == 1 + len(events)
        assert [e.version for e in events] == list(range(2, 2 + len(events)))
        if events:
            assert events[-1].state is state
        else:
            assert state is S.AWAITING_PICKUP
        for before, after in pairwise(events):
            assert after.previous_state is before.state
            assert after.state is not before.state


@settings(max_examples=100, deadline=None, derandomize=True, database=None, phases=[Phase.generate])
@given(data=st.data(), entries=entry_sets(unique_sort_keys=False))
def test_any_order_batching_and_duplication_gives_the_same_trace(
    data: st.DataObject, entries: list[TraceEntry]
) -> None:
    first, first_events = _replay(data.draw(deliveries(entries, dups_in_batch=True)), NOW)
    second, second_events = _replay(data.draw(deliveries(entries, dups_in_batch=True)), NOW)

    for result, events in ((first, first_events), (second, second_events)):
        assert result.state is _expected(entries)[1]
        assert result.version == 1 + len(events)
        assert [e.version for e in events] == list(range(2, 2 + len(events)))
    assert first.trace == second.trace
    assert len(first.trace) == len(set(entries))


def _change(previous: TrackingState | None, state: TrackingState) -> ParcelTrackingChanged:
    update = apply_entries(tracking(), [entry(1, state, "x")], now=NOW)
    return update.events[0].model_copy(update={"previous_state": previous})


@pytest.mark.parametrize(
    ("previous", "state", "moves"),
    [
        (S.AWAITING_PICKUP, S.PICKED_UP, False),
        (S.PICKED_UP, S.IN_TRANSIT, False),
        (S.IN_TRANSIT, S.OUT_FOR_DELIVERY, False),
        (S.IN_TRANSIT, S.EXCEPTION, False),
        (None, S.IN_TRANSIT, False),
        (S.OUT_FOR_DELIVERY, S.DELIVERED, True),
        (None, S.DELIVERED, True),
        (S.IN_TRANSIT, S.RETURNED, True),
        (S.DELIVERED, S.RETURNED, True),
        (S.DELIVERED, S.EXCEPTION, True),
        (S.RETURNED, S.IN_TRANSIT, True),
    ],
)
def test_aftersale_hears_of_a_parcel_only_when_it_reaches_or_leaves_the_buyer_or_the_sender(
    previous: TrackingState | None, state: TrackingState, moves: bool
) -> None:
    assert moves_whereabouts(_change(previous, state)) is moves
