"""route_lines: specificity, priority, fallbacks, stock caps, inactive and rejecting suppliers, holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatch.domain.routing import (
    Held,
    LineToRoute,
    Route,
    Routed,
    Specificity,
    candidate_routes,
    route_lines,
)
from shared.events.dispatch import HoldReason
from tests.unit.dispatch.builders import SHOP, route, sku_route, to_route

# --- Route ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"product_id": "p1"}, "needs both product_id and sku_id"),
        ({"sku_id": "s1"}, "needs both product_id and sku_id"),
        ({"product_id": "p1", "sku_id": "s1", "sku_code": "C1"}, "not both"),
        ({"stock_cap": -1}, "must not be negative"),
    ],
)
def test_route_refuses_an_ambiguous_or_negative_definition(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Route(shop_id=SHOP, supplier_id="a", **kwargs)  # type: ignore[arg-type]


def test_route_specificity_and_identity() -> None:
    by_sku = sku_route("a", "p1", "s1")
    by_code = route("a", sku_code="C1")
    default = route("a")
    assert (by_sku.specificity, by_code.specificity, default.specificity) == (
        Specificity.SKU,
        Specificity.SKU_CODE,
        Specificity.SHOP_DEFAULT,
    )
    assert by_sku.route_id == f"{SHOP}|sku:p1:s1|a"
    assert by_code.route_id == f"{SHOP}|code:C1|a"
    assert default.route_id == f"{SHOP}|default|a"
    # Priority and caps are not part of the identity: one route per shop, match and supplier.
    assert route("a", 1, stock_cap=3).route_id == route("a", 9).route_id


def test_a_zero_stock_cap_is_allowed() -> None:
    assert route("a", stock_cap=0).remaining == 0


@pytest.mark.parametrize(
    ("cap", "allocated", "remaining"), [(None, 5, None), (10, 0, 10), (10, 4, 6), (10, 10, 0), (10, 12, 0)]
)
def test_route_remaining_never_goes_below_zero(
    cap: int | None, allocated: int, remaining: int | None
) -> None:
    assert route("a", stock_cap=cap, allocated=allocated).remaining == remaining


def test_route_matching() -> None:
    line = to_route(0, product="p1", sku="s1", code="C1")
    assert sku_route("a", "p1", "s1").matches(line)
    assert not sku_route("a", "p1", "s2").matches(line)
    assert not sku_route("a", "p2", "s1").matches(line)
    assert route("a", sku_code="C1").matches(line)
    assert not route("a", sku_code="C2").matches(line)
    assert route("a").matches(line)


def test_a_line_without_sku_code_matches_no_sku_code_route() -> None:
    assert not route("a", sku_code="C1").matches(to_route(0, code=""))


def test_candidates_are_ordered_by_specificity_then_priority_then_supplier() -> None:
    line = to_route(0, product="p1", sku="s1", code="C1")
    routes = [
        route("default-1", 1),
        route("code-5", 5, sku_code="C1"),
        sku_route("sku-9", "p1", "s1", 9),
        sku_route("sku-2b", "p1", "s1", 2),
        sku_route("sku-2a", "p1", "s1", 2),
        route("other-code", 0, sku_code="C9"),
    ]
    assert [r.supplier_id for r in candidate_routes(line, routes)] == [
        "sku-2a",
        "sku-2b",
        "sku-9",
        "code-5",
        "default-1",
    ]


# --- Specificity and priority -------------------------------------------------------------------


def test_sku_route_beats_sku_code_and_default_even_with_a_worse_priority() -> None:
    routes = [route("default", 0), route("code", 0, sku_code="C1"), sku_route("sku", "p1", "s1", 999)]
    decision = route_lines([to_route(0, code="C1")], routes, active_suppliers={"default", "code", "sku"})
    assert decision == Routed({"sku": [0]}, {})


def test_sku_code_route_beats_shop_default() -> None:
    routes = [route("default", 0), route("code", 50, sku_code="C1")]
    decision = route_lines([to_route(0, code="C1")], routes, active_suppliers={"default", "code"})
    assert decision == Routed({"code": [0]}, {})


def test_shop_default_takes_lines_no_other_route_matches() -> None:
    routes = [route("default"), sku_route("sku", "p9", "s9")]
    decision = route_lines([to_route(0)], routes, active_suppliers={"default", "sku"})
    assert decision == Routed({"default": [0]}, {})


def test_lowest_priority_number_wins_within_a_specificity() -> None:
    routes = [route("b", 20), route("a", 10), route("c", 30)]
    assert route_lines([to_route(0)], routes, active_suppliers={"a", "b", "c"}) == Routed({"a": [0]}, {})


def test_equal_priority_is_broken_by_supplier_id_not_by_route_order() -> None:
    for routes in ([route("b", 1), route("a", 1)], [route("a", 1), route("b", 1)]):
        assert route_lines([to_route(0)], routes, active_suppliers={"a", "b"}) == Routed({"a": [0]}, {})


def test_lines_of_one_order_split_by_their_own_routes() -> None:
    lines = [
        to_route(0, product="p1", sku="s1"),
        to_route(1, product="p2", sku="s2", code="C2"),
        to_route(2, product="p3", sku="s3"),
        to_route(3, product="p1", sku="s1"),
    ]
    routes = [sku_route("a", "p1", "s1"), route("b", sku_code="C2"), route("c")]
    decision = route_lines(lines, routes, active_suppliers={"a", "b", "c"})
    assert decision == Routed({"a": [0, 3], "b": [1], "c": [2]}, {})


def test_no_lines_route_to_nothing() -> None:
    assert route_lines([], [route("a")], active_suppliers={"a"}) == Routed({}, {})


# --- Fallbacks ------------------------------------------------------------------------------------


def test_inactive_supplier_falls_back_to_the_next_priority() -> None:
    routes = [route("a", 1), route("b", 2)]
    assert route_lines([to_route(0)], routes, active_suppliers={"b"}) == Routed({"b": [0]}, {})


def test_fallback_crosses_specificity_to_the_shop_default() -> None:
    routes = [sku_route("sku", "p1", "s1", 1), route("code", 1, sku_code="C1"), route("default", 1)]
    assert route_lines([to_route(0, code="C1")], routes, active_suppliers={"code", "default"}) == Routed(
        {"code": [0]}, {}
    )
    assert route_lines([to_route(0, code="C1")], routes, active_suppliers={"default"}) == Routed(
        {"default": [0]}, {}
    )


def test_excluded_supplier_falls_back_for_that_line_only() -> None:
    routes = [route("a", 1), route("b", 2)]
    decision = route_lines(
        [to_route(0), to_route(1)], routes, active_suppliers={"a", "b"}, excluded={1: ["a"]}
    )
    assert decision == Routed({"a": [0], "b": [1]}, {})


def test_excluded_supplier_is_skipped_at_every_specificity() -> None:
    routes = [sku_route("a", "p1", "s1", 1), route("a", 1), route("b", 5)]
    decision = route_lines([to_route(0)], routes, active_suppliers={"a", "b"}, excluded={0: {"a"}})
    assert decision == Routed({"b": [0]}, {})


def test_excluded_for_another_line_does_not_matter() -> None:
    decision = route_lines([to_route(0)], [route("a")], active_suppliers={"a"}, excluded={7: ["a"]})
    assert decision == Routed({"a": [0]}, {})


# --- Stock caps -------------------------------------------------------------------------------------


def test_capped_route_takes_a_line_that_fits_and_reports_the_allocation() -> None:
    capped = route("a", 1, stock_cap=5, allocated=2)
    decision = route_lines([to_route(0, 3)], [capped], active_suppliers={"a"})
    assert decision == Routed({"a": [0]}, {capped.route_id: 3})


def test_capped_route_that_cannot_take_the_whole_line_falls_back() -> None:
    capped = route("a", 1, stock_cap=5, allocated=3)
    decision = route_lines([to_route(0, 3)], [capped, route("b", 2)], active_suppliers={"a", "b"})
    # A line is never split between suppliers, and the capped route took nothing.
    assert isinstance(decision, Routed)
    assert decision.lines_by_supplier == {"b": [0]}
    assert not any(decision.allocations.values())


def test_allocations_name_only_routes_that_took_units() -> None:
    capped = route("a", 1, stock_cap=5, allocated=3)
    decision = route_lines([to_route(0, 3)], [capped, route("b", 2)], active_suppliers={"a", "b"})
    assert decision == Routed({"b": [0]}, {})


def test_several_lines_share_one_capped_route_until_it_is_used_up() -> None:
    capped = route("a", 1, stock_cap=5)
    lines = [to_route(0, 2), to_route(1, 2), to_route(2, 2), to_route(3, 1)]
    decision = route_lines(lines, [capped, route("b", 2)], active_suppliers={"a", "b"})
    # 2 + 2 fit; the third pair would make 6 > 5 and goes to b; the last unit still fits (5).
    assert decision == Routed({"a": [0, 1, 3], "b": [2]}, {capped.route_id: 5})


def test_capped_fallback_route_counts_only_what_it_took() -> None:
    first = route("a", 1, stock_cap=1)
    second = route("b", 2, stock_cap=10, allocated=4)
    decision = route_lines([to_route(0, 1), to_route(1, 3)], [first, second], active_suppliers={"a", "b"})
    assert decision == Routed({"a": [0], "b": [1]}, {first.route_id: 1, second.route_id: 3})


def test_uncapped_routes_report_no_allocation() -> None:
    decision = route_lines([to_route(0, 1000)], [route("a")], active_suppliers={"a"})
    assert decision == Routed({"a": [0]}, {})


def test_a_line_exactly_filling_the_cap_is_taken() -> None:
    capped = route("a", stock_cap=4, allocated=1)
    assert route_lines([to_route(0, 3)], [capped], active_suppliers={"a"}) == Routed(
        {"a": [0]}, {capped.route_id: 3}
    )


def test_caps_are_per_route_so_one_supplier_two_capped_routes_are_counted_apart() -> None:
    by_sku = sku_route("a", "p1", "s1", 1, stock_cap=2)
    default = route("a", 1, stock_cap=2)
    lines = [to_route(0, 2, product="p1", sku="s1"), to_route(1, 2, product="p1", sku="s1")]
    decision = route_lines(lines, [by_sku, default], active_suppliers={"a"})
    assert decision == Routed({"a": [0, 1]}, {by_sku.route_id: 2, default.route_id: 2})


# --- Holds --------------------------------------------------------------------------------------------


def test_no_matching_route_holds_with_no_route() -> None:
    decision = route_lines([to_route(0)], [sku_route("a", "p9", "s9")], active_suppliers={"a"})
    assert decision == Held(HoldReason.NO_ROUTE, [0])


def test_no_routes_at_all_holds_every_line() -> None:
    assert route_lines([to_route(0), to_route(1)], [], active_suppliers={"a"}) == Held(
        HoldReason.NO_ROUTE, [0, 1]
    )


def test_whole_order_is_held_when_any_line_is_unroutable() -> None:
    lines = [to_route(0, product="p1", sku="s1"), to_route(1, product="p2", sku="s2")]
    decision = route_lines(lines, [sku_route("a", "p1", "s1")], active_suppliers={"a"})
    # Nothing is dispatched, not even the routable line 0; only the unroutable line is named.
    assert decision == Held(HoldReason.NO_ROUTE, [1])


def test_only_inactive_suppliers_holds_with_supplier_inactive() -> None:
    decision = route_lines([to_route(0)], [route("a", 1), route("b", 2)], active_suppliers={"c"})
    assert decision == Held(HoldReason.SUPPLIER_INACTIVE, [0])


def test_every_cap_used_up_holds_with_stock_cap_reached() -> None:
    routes = [route("a", 1, stock_cap=1), route("b", 2, stock_cap=5, allocated=5)]
    decision = route_lines([to_route(0, 2)], routes, active_suppliers={"a", "b"})
    assert decision == Held(HoldReason.STOCK_CAP_REACHED, [0])


def test_every_matching_supplier_rejected_holds_with_all_suppliers_rejected() -> None:
    decision = route_lines(
        [to_route(0)], [route("a", 1), route("b", 2)], active_suppliers={"a", "b"}, excluded={0: ["a", "b"]}
    )
    assert decision == Held(HoldReason.ALL_SUPPLIERS_REJECTED, [0])


@pytest.mark.parametrize(
    ("active", "excluded", "expected"),
    [
        # a rejected it, b inactive: the inactive supplier is something an operator can fix.
        ({"a"}, ["a"], HoldReason.SUPPLIER_INACTIVE),
        # a rejected it, b's cap is used up: the cap wins.
        ({"a", "b"}, ["a"], HoldReason.STOCK_CAP_REACHED),
    ],
)
def test_the_most_telling_reason_is_given(
    active: set[str], excluded: list[str], expected: HoldReason
) -> None:
    routes = [route("a", 1), route("b", 2, stock_cap=0)]
    decision = route_lines([to_route(0)], routes, active_suppliers=active, excluded={0: excluded})
    assert decision == Held(expected, [0])


def test_stock_cap_is_more_telling_than_an_inactive_supplier() -> None:
    routes = [route("a", 1), route("b", 2, stock_cap=0)]
    assert route_lines([to_route(0)], routes, active_suppliers={"b"}) == Held(
        HoldReason.STOCK_CAP_REACHED, [0]
    )


def test_hold_reason_is_the_lowest_unroutable_line_s() -> None:
    lines = [
        to_route(0, product="p0", sku="s0"),
        to_route(3, product="p3", sku="s3"),
        to_route(1, product="p1", sku="s1"),
    ]
    routes = [sku_route("a", "p1", "s1"), sku_route("b", "p3", "s3", stock_cap=0)]
    decision = route_lines(lines, routes, active_suppliers={"a", "b"})
    # Line 0 has no route, line 3 a used-up cap; line 1 is routable.
    assert decision == Held(HoldReason.NO_ROUTE, [0, 3])
    decision = route_lines(lines[1:], routes, active_suppliers={"a", "b"})
    assert decision == Held(HoldReason.STOCK_CAP_REACHED, [3])


def test_a_line_that_used_a_cap_still_counts_when_a_later_line_is_held() -> None:
    capped = route("a", stock_cap=3)
    decision = route_lines([to_route(0, 2), to_route(1, 2)], [capped], active_suppliers={"a"})
    assert decision == Held(HoldReason.STOCK_CAP_REACHED, [1])


# --- Properties -----------------------------------------------------------------------------------------

SUPPLIERS = ["a", "b", "c", "d"]
PRODUCTS = ["p1", "p2", "p3"]
CODES = ["", "C1", "C2"]


@st.composite
def routes_strategy(draw: st.DrawFn) -> list[Route]:
    routes: list[Route] = []
    seen: set[str] = set()
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["sku", "code", "default"]))
        supplier = draw(st.sampled_from(SUPPLIERS))
        cap = draw(st.none() | st.integers(0, 12))
        common = {
            "supplier_id": supplier,
            "priority": draw(st.integers(0, 5)),
            "stock_cap": cap,
            "allocated": draw(st.integers(0, 6)) if cap is not None else 0,
        }
        if kind == "sku":
            product = draw(st.sampled_from(PRODUCTS))
            candidate = Route(shop_id=SHOP, product_id=product, sku_id=f"s-{product}", **common)  # type: ignore[arg-type]
        elif kind == "code":
            candidate = Route(shop_id=SHOP, sku_code=draw(st.sampled_from(CODES[1:])), **common)  # type: ignore[arg-type]
        else:
            candidate = Route(shop_id=SHOP, **common)  # type: ignore[arg-type]
        if candidate.route_id not in seen:  # one route per shop, match and supplier
            seen.add(candidate.route_id)
            routes.append(candidate)
    return routes


@st.composite
def lines_strategy(draw: st.DrawFn) -> list[LineToRoute]:
    lines = []
    for line_no in range(draw(st.integers(0, 6))):
        product = draw(st.sampled_from(PRODUCTS))
        lines.append(
            LineToRoute(
                line_no, product, f"s-{product}", draw(st.sampled_from(CODES)), draw(st.integers(1, 5))
            )
        )
    return lines


@given(
    lines=lines_strategy(),
    routes=routes_strategy(),
    active=st.sets(st.sampled_from(SUPPLIERS)),
    excluded=st.dictionaries(st.integers(0, 5), st.lists(st.sampled_from(SUPPLIERS), max_size=2), max_size=3),
)
def test_property_every_line_routed_once_within_caps_or_held(
    lines: list[LineToRoute],
    routes: list[Route],
    active: set[str],
    excluded: dict[int, list[str]],
) -> None:
    decision = route_lines(lines, routes, active_suppliers=active, excluded=excluded)
    by_id = {r.route_id: r for r in routes}
    if isinstance(decision, Held):
        assert decision.line_nos, "a hold names the lines that wait"
        assert decision.line_nos == sorted(set(decision.line_nos))
        assert set(decision.line_nos) <= {line.line_no for line in lines}
        return
    assigned = [n for numbers in decision.lines_by_supplier.values() for n in numbers]
    assert sorted(assigned) == sorted(line.line_no for line in lines), "every line exactly once"
    for supplier, numbers in decision.lines_by_supplier.items():
        assert numbers, "no supplier gets an empty list"
        assert supplier in active
        for line in (line for line in lines if line.line_no in numbers):
            assert supplier not in excluded.get(line.line_no, [])
            assert any(r.supplier_id == supplier and r.matches(line) for r in routes)
    units = sum(line.quantity for line in lines)
    assert sum(decision.allocations.values()) <= units
    for route_id, taken in decision.allocations.items():
        remaining = by_id[route_id].remaining
        assert remaining is not None, "only capped routes count allocations"
        assert 0 <= taken <= remaining, "a stock cap is never exceeded"


@given(lines=lines_strategy(), routes=routes_strategy())
def test_property_an_active_uncapped_default_route_makes_every_order_routable(
    lines: list[LineToRoute], routes: list[Route]
) -> None:
    fallback = Route(shop_id=SHOP, supplier_id="z", priority=10_000)
    decision = route_lines(lines, [*routes, fallback], active_suppliers={*SUPPLIERS, "z"})
    assert isinstance(decision, Routed)


@given(lines=lines_strategy(), routes=routes_strategy(), active=st.sets(st.sampled_from(SUPPLIERS)))
def test_property_routing_does_not_depend_on_the_order_routes_are_given_in(
    lines: list[LineToRoute], routes: list[Route], active: set[str]
) -> None:
    assert route_lines(lines, routes, active_suppliers=active) == route_lines(
        lines, list(reversed(routes)), active_suppliers=active
    )
