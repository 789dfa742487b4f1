"""bench e2e's baseline at rest: CPU % of one core per process, the line's sum and its 5% gate, and CPU
per order net of what each process spends at rest."""

import pytest

from ops.bench_e2e import (
    IDLE_TARGET_PCT,
    LINE_AT_REST,
    cpu_ms_per_order,
    idle_percent,
    idle_verdict,
    line_at_rest,
    net_of_idle,
)
from ops.stack import SERVICES


def test_cpu_seconds_over_the_baseline_become_percent_of_one_core() -> None:
    assert idle_percent({"kafka": 0.9, "dispatch": 0.3}, 30.0) == pytest.approx(
        {"kafka": 3.0, "dispatch": 1.0}
    )
    assert idle_percent({"kafka": 0.9}, 0.0) == {"kafka": 0.0}


def test_the_line_at_rest_is_the_services_kafka_and_ferretdb_without_stand_ins_or_prometheus() -> None:
    idle = {name: 0.5 for name in LINE_AT_REST} | {"wechat_sim": 3.0, "carrier_sim": 2.0, "prometheus": 1.0}
    assert line_at_rest(idle) == pytest.approx(0.5 * 7)
    assert set(LINE_AT_REST) == {*SERVICES, "kafka", "ferretdb"}
    assert line_at_rest({}) == 0.0


def test_the_idle_gate_is_met_at_five_percent_and_missed_above_it() -> None:
    assert IDLE_TARGET_PCT == 5.0
    assert idle_verdict(5.0) == (True, "the line at rest 5.0% ≤ 5% of one core")
    met, says = idle_verdict(19.04)
    assert not met
    assert says == "the line at rest 19.0% > 5% of one core: MISSED by 14.0 points"


def test_cpu_net_of_idle_subtracts_each_processs_rest_over_the_same_window() -> None:
    cpu_s = {"kafka": 20.0, "dispatch": 30.0, "supplier bots (sim.suppliers)": 5.0, "aftersale": 0.1}
    idle_pct = {"kafka": 5.0, "dispatch": 2.0, "aftersale": 1.0}
    net = net_of_idle(cpu_s, idle_pct, window_s=100.0)
    # kafka 20 - 5% of 100 s; dispatch 30 - 2; no baseline for the bots; aftersale never below zero
    assert net == pytest.approx(
        {"kafka": 15.0, "dispatch": 28.0, "supplier bots (sim.suppliers)": 5.0, "aftersale": 0.0}
    )
    assert cpu_ms_per_order(net, 1000) == pytest.approx(48.0)
    assert cpu_ms_per_order(cpu_s, 1000) == pytest.approx(55.1)
