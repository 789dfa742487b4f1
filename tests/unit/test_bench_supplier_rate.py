"""bench-e2e gives dispatch's rate limit and the bots' pacing one figure, enough for the scenario's
calls per supplier (two dispatch orders per paid order at most, two calls each, plus the polls)."""

from __future__ import annotations

from ops.bench_e2e import supplier_call_rate


def test_the_rate_covers_twice_the_calls_a_supplier_needs_at_the_scenarios_rate() -> None:
    for rate, suppliers in ((100, 20), (200, 20), (200, 5), (1000, 100)):
        needed = rate * 2 * 2 / suppliers + 3  # accept and ship of up to two dispatch orders, polls
        assert supplier_call_rate(rate, suppliers) >= 2 * needed


def test_never_under_the_apis_default() -> None:
    assert supplier_call_rate(1, 100) == 20
    assert supplier_call_rate(100, 20) == 46  # the default scenario
    assert supplier_call_rate(200, 20) == 86  # the target's rate
