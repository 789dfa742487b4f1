"""`lvyue bench report`: the newest result of each benchmark scenario (`bench ingest`, `bench
dispatch`, `bench e2e`, JSON in bench-results/) as one Markdown report, REPORT.md: every figure with
its ceiling measured in the same run (bare FastAPI endpoint, bare aiokafka, bench e2e's reference
chain), the ratio to it, the target and by how much it is met or missed; CPU and peak RSS per process
(target: every service ≤ 200 MB); whether the machine was quiet; where profiles show the time goes.
Beside it, PNG plots of throughput and p99 latency per second of each scenario (matplotlib)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from ops.bench_dispatch import speedscope_inclusive
from ops.loadgen import sustained
from ops.stack import REPO_ROOT, SERVICES

console = Console()

SCENARIOS = ("ingest", "e2e", "dispatch")  # the order: 1, 2, 3
# The "200 MB" read strictly: 200 × 10⁶ bytes (190.7 MiB, the unit every RSS here is measured in).
SERVICE_RSS_TARGET_MIB = 200e6 / 2**20
TITLES = {
    "ingest": "1. Ingest burst: signed, encrypted webhooks → ack",
    "dispatch": "3. Supplier feed: paid-order event → dispatch order in the feed, suppliers long-polling",
    "e2e": "2. End-to-end sale: paid at WeChat → supplier feed → shipped → WeChat told",
}
# (p99 target ms, the rate it applies at, the duration it applies for)
TARGETS: dict[str, tuple[float, float, float]] = {
    "ingest": (100.0, 1000.0, 60.0),
    "dispatch": (1000.0, 200.0, 0.0),
    "e2e": (1000.0, 200.0, 0.0),
}


# ---- figures and verdicts (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    bound: float
    kind: Literal["max", "min"]  # value ≤ bound, or value ≥ bound
    unit: str = ""
    at_rate: float = 0.0  # the load the target is set for (0: any)


@dataclass(frozen=True)
class Row:
    scenario: str
    figure: str
    value: float | None
    ceiling: float | None = None
    target: Target | None = None
    rate: float = 0.0  # the load the figure was measured at
    note: str = ""


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """value ÷ ceiling (latency: how many times slower; throughput: the share reached)."""
    if value is None or ceiling is None or ceiling <= 0 or math.isinf(value):
        return None
    return value / ceiling


def _num(value: float, unit: str = "") -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def judge(value: float | None, target: Target, rate: float = 0.0) -> tuple[bool, str]:
    """(met, verdict): met or missed and by how much; a figure that meets a target set for a higher
    load than it was measured at is not counted as met."""
    if value is None or math.isnan(value):
        return False, "no figure: missed"
    if target.kind == "max":
        ok = value <= target.bound
        if ok:
            spare = target.bound - value
            verdict = f"met, {_num(spare, target.unit)} to spare" if spare else "met"
        else:
            times = f" ({value / target.bound:.1f}×)" if target.bound > 0 else ""
            verdict = f"missed by {_num(value - target.bound, target.unit)}{times}"
    else:
        ok = value >= target.bound
        if ok:
            verdict = f"met, {_num(value - target.bound, target.unit)} above"
        else:
            short = (target.bound - value) / target.bound if target.bound else 0.0
            verdict = f"missed by {_num(target.bound - value, target.unit)} ({short:.0%} short)"
    if ok and target.at_rate and rate < target.at_rate:
        return False, f"{verdict} at {rate:g}/s, but the target is at {target.at_rate:g}/s: not shown"
    return ok, verdict


def _get(data: dict[str, Any], *path: str) -> float | None:
    current: Any = data
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return float(current) if isinstance(current, int | float) else None


def sustained_rate(run: dict[str, Any]) -> float | None:
    """Requests acked per second of the schedule when the bench's rule says the run sustained it
    (`ops.loadgen.sustained`: 60,000 pushes whose last answer came 6 ms after the 60 s mark sustained
    1,000/s, where run + drain says 999.9), else acked per second of run + drain."""
    ok, duration = _get(run, "ok"), _get(run, "duration_s")
    rate, drain = _get(run, "target_rate_per_s"), _get(run, "drain_s")
    if ok is None or not duration or rate is None or drain is None:
        return _get(run, "achieved_rate_per_s")
    held = sustained(
        failed=int(_get(run, "failed") or 0),
        sent=int(_get(run, "sent") or 0),
        planned=rate * duration,
        drain_s=drain,
    )
    return ok / duration if held else _get(run, "achieved_rate_per_s")


def ingest_rows(data: dict[str, Any]) -> list[Row]:
    p99_target, rate_target, duration_target = TARGETS["ingest"]
    ingest, bare = data.get("ingest", {}), data.get("bare", {})
    rate = float(ingest.get("target_rate_per_s", 0))
    duration = float(ingest.get("duration_s", 0))
    note = f"{rate:g}/s for {duration:g} s"
    if duration < duration_target:
        note += f" (target: {duration_target:g} s)"
    ms = Target(p99_target, "max", "ms", rate_target)
    return [
        Row(
            "ingest",
            "webhooks acked OK per s (of the schedule if all answered in time, else run + drain)",
            sustained_rate(ingest),
            sustained_rate(bare),
            Target(rate_target, "min", "/s"),
            rate,
            note,
        ),
        Row(
            "ingest",
            "failed or unanswered (10 s)",
            _get(data, "ingest", "failed"),
            _get(data, "bare", "failed"),
            Target(0, "max"),
            rate,
        ),
        Row("ingest", "p50 ack ms", _get(data, "ingest", "p50_ms"), _get(data, "bare", "p50_ms"), None, rate),
        Row("ingest", "p99 ack ms", _get(data, "ingest", "p99_ms"), _get(data, "bare", "p99_ms"), ms, rate),
        Row(
            "ingest",
            "p99.9 ack ms",
            _get(data, "ingest", "p999_ms"),
            _get(data, "bare", "p999_ms"),
            None,
            rate,
        ),
        Row("ingest", "max ack ms", _get(data, "ingest", "max_ms"), _get(data, "bare", "max_ms"), None, rate),
        Row(
            "ingest",
            "acks over WeChat's 5 s",
            _get(data, "ingest", "over_deadline"),
            float(bare.get("over_deadline", 0)) if bare else None,
            Target(0, "max"),
            rate,
        ),
    ]


def dispatch_rows(data: dict[str, Any]) -> list[Row]:
    p99_target, rate_target, _ = TARGETS["dispatch"]
    config = data.get("config", {})
    rate = float(config.get("rate_per_s", 0))
    note = (
        f"{rate:g} orders/s for {config.get('duration_s', 0):g} s, {config.get('suppliers', '?')} suppliers"
    )
    ceiling = "ceiling_one_hop"
    return [
        Row(
            "dispatch",
            "paid event → feed p50 ms",
            _get(data, "feed_latency", "p50_ms"),
            _get(data, ceiling, "p50_ms"),
            None,
            rate,
            note,
        ),
        Row(
            "dispatch",
            "paid event → feed p99 ms",
            _get(data, "feed_latency", "p99_ms"),
            _get(data, ceiling, "p99_ms"),
            Target(p99_target, "max", "ms", rate_target),
            rate,
        ),
        Row(
            "dispatch",
            "paid event → feed max ms",
            _get(data, "feed_latency", "max_ms"),
            _get(data, ceiling, "max_ms"),
            None,
            rate,
        ),
        Row(
            "dispatch",
            "dispatch orders missing",
            _get(data, "dispatch_orders", "missing"),
            _get(data, ceiling, "missed"),
            Target(0, "max"),
            rate,
        ),
        Row(
            "dispatch",
            "drain after the last publish s",
            _get(data, "dispatch_orders", "drain_s"),
            None,
            Target(1.0, "max", "s"),
            rate,
        ),
    ]


def e2e_rows(data: dict[str, Any]) -> list[Row]:
    p99_target, rate_target, _ = TARGETS["e2e"]
    config = data.get("config", {})
    rate = float(config.get("rate_per_s", 0))
    target_stage = data.get("target_stage", "")
    rows = []
    first = True
    for name, figures in data.get("stages", {}).items():
        is_target = name == target_stage
        ceiling = data.get("ceiling", {}) if is_target else {}
        note = ""
        if first:
            note = (
                f"{rate:g} orders/s for {config.get('duration_s', 0):g} s, {config.get('shops', '?')} shops, "
                f"{config.get('suppliers', '?')} suppliers"
            )
            first = False
        for percentile in ("p50_ms", "p99_ms"):
            target = (
                Target(p99_target, "max", "ms", rate_target) if is_target and percentile == "p99_ms" else None
            )
            rows.append(
                Row(
                    "e2e",
                    f"{name} {percentile.removesuffix('_ms')} ms",
                    _get(figures, percentile),
                    _get(ceiling, percentile),
                    target,
                    rate,
                    note if percentile == "p50_ms" else "",
                )
            )
        if figures.get("missing"):
            rows.append(
                Row("e2e", f"{name}: orders missing", float(figures["missing"]), None, Target(0, "max"))
            )
    orders = data.get("orders", {})
    rows.append(
        Row(
            "e2e",
            "orders told to WeChat per s (over load + drain)",
            _get(data, "throughput", "told_per_s_over_window"),
            _get(data, "throughput", "created_per_s"),
            None,
            rate,
            f"ceiling: orders created per s; {orders.get('not_told_at_end', '?')} not told at the end",
        )
    )
    rows.append(
        Row(
            "e2e",
            "drain after the last order s",
            _get(data, "orders", "drain_s"),
            None,
            Target(1.0, "max", "s"),
            rate,
        )
    )
    spent = _get(data, "work_per_order", "cpu_ms_all_processes")
    reference_ms = _get(data, "reference", "cpu_ms_per_order")
    if spent is not None:
        budget = _get(data, "work_per_order", "cpu_ms_budget_at_target")
        notes = [f"two cores at {rate_target:g} orders/s give {budget:g} ms" if budget else ""]
        if reference_ms is not None:
            notes.append("ceiling: the reference chain's")
        rows.append(
            Row(
                "e2e",
                "CPU ms per order, every process of the line",
                spent,
                reference_ms,
                None,
                rate,
                "; ".join(n for n in notes if n),
            )
        )
    rows += reference_rows(data, rate)
    net = _get(data, "work_per_order", "cpu_ms_all_processes_net_of_idle")
    if net is not None:
        rows.append(Row("e2e", "CPU ms per order, net of the line at rest", net, None, None, rate))
    for gate in (data.get("work_per_order") or {}).get("gates", []):
        rows.append(
            Row(
                "e2e",
                f"{gate['name']} per order",
                gate["value"],
                None,
                Target(gate["bound"], "max"),
                rate,
                "exactly this many on the happy path" if gate.get("exact") else "",
            )
        )
    at_rest = _get(data, "idle", "line_pct_of_one_core")
    if at_rest is not None:
        seconds = _get(data, "idle", "seconds") or 0.0
        rows.append(
            Row(
                "e2e",
                "the line at rest (services, Kafka, FerretDB), CPU % of one core",
                at_rest,
                None,
                Target(_get(data, "idle", "target_pct") or 5.0, "max", "%"),
                rate,
                f"{seconds:g} s with the stack up and nothing moving, before the load",
            )
        )
    return rows


def reference_rows(data: dict[str, Any], rate: float) -> list[Row]:
    """bench e2e's reference chain (the line's work per order, built bare, run after it): its CPU per
    order, the line's against it (the gate), and its latency from send to its last relay."""
    reference = data.get("reference")
    if not reference:
        return []
    gate = reference.get("gate") or {}
    work = (reference.get("work_per_order") or {}).get("done") or {}
    did = ", ".join(
        f"{work[k]:.2f} {name}"
        for k, name in (
            ("http_exchanges", "HTTP exchanges"),
            ("kafka_consumed", "Kafka messages consumed"),
            ("documents_written", "documents inserted"),
        )
        if k in work
    )
    line_ms, reference_ms = _get(reference, "line_cpu_ms_per_order"), _get(reference, "cpu_ms_per_order")
    line_to_reference = _get(reference, "ratio_line_to_reference")
    return [
        Row(
            "e2e",
            "CPU ms per order, the reference chain (the line's work per order, bare)",
            reference_ms,
            None,
            None,
            rate,
            f"per order: {did}" if did else "",
        ),
        Row(
            "e2e",
            "CPU per order, the line ÷ the reference chain",
            line_to_reference,
            None,
            Target(float(gate.get("bound", 2.0)), "max"),
            rate,
            f"{line_ms:.1f} ms ÷ {reference_ms:.1f} ms = {line_to_reference:.2f}×"
            if line_ms is not None and reference_ms is not None and line_to_reference is not None
            else "",
        ),
        Row(
            "e2e",
            "the reference chain: send → its last relay p99 ms",
            _get(reference, "chain_latency", "p99_ms"),
            None,
            None,
            rate,
        ),
    ]


ROWS = {"ingest": ingest_rows, "dispatch": dispatch_rows, "e2e": e2e_rows}


@dataclass(frozen=True)
class ProcessRow:
    scenario: str
    process: str
    cpu_s: float
    window_s: float
    peak_rss_mib: float
    service: bool  # one of the services (the 200 MB target applies)


def process_rows(scenario: str, data: dict[str, Any]) -> list[ProcessRow]:
    """CPU seconds during the measured run (ingest: the webhook run; dispatch and e2e: load + drain)
    and peak RSS per process."""
    if scenario == "ingest":
        key = "cpu_s_webhook_run"
        window = float(data.get("ingest", {}).get("duration_s", 0)) + float(
            data.get("ingest", {}).get("drain_s", 0)
        )
    else:
        key = "cpu_s_load_and_drain"
        window = float(data.get("machine", {}).get("window_s") or 0) or (
            float(data.get("config", {}).get("duration_s", 0))
            + float(data.get("dispatch_orders", data.get("orders", {})).get("drain_s", 0))
        )
    return [
        ProcessRow(
            scenario,
            name,
            float(p.get(key, 0.0)),
            window,
            float(p.get("peak_rss_mib", 0.0)),
            name in SERVICES,
        )
        for name, p in sorted(data.get("processes", {}).items())
    ]


def machine_note(scenario: str, data: dict[str, Any]) -> str:
    machine = data.get("machine")
    if not machine:
        return "not recorded by this benchmark (`bench ingest` does not check for other load)"
    load = machine.get("load_average_at_end")
    average = f"; load average at the end {load[0]:.1f}" if load else ""
    others = f"other processes used {machine.get('other_processes_cpu_s', 0):g} CPU s during the run{average}"
    if machine.get("no_other_benchmark"):
        return f"no other benchmark or test run seen; {others}"
    return f"**not quiet**: other benchmark/test processes {machine.get('other_benchmark_pids')}; {others}"


_RESULT = re.compile(r"^(?P<scenario>[a-z0-9]+)-(?P<stamp>\d{8}T\d{6})\.json$")


def latest_results(directory: Path) -> dict[str, Path]:
    """The newest `<scenario>-<YYYYmmddTHHMMSS>.json` of each scenario (profiles and the like skipped)."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in directory.glob("*.json"):
        match = _RESULT.match(path.name)
        if not match or match["scenario"] not in SCENARIOS:
            continue
        scenario, stamp = match["scenario"], match["stamp"]
        if scenario not in newest or stamp > newest[scenario][0]:
            newest[scenario] = (stamp, path)
    return {scenario: path for scenario, (_, path) in newest.items()}


# ---- timelines (pure) and plots --------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    label: str
    seconds: list[int]
    per_second: list[float]
    p99_ms: list[float | None]  # None: no latency in that second (or none measured for this series)


def timelines(scenario: str, data: dict[str, Any]) -> list[Series]:
    """Per-second throughput and p99 of each series a scenario's JSON holds."""

    def from_triples(label: str, rows: list[list[float]]) -> Series:
        return Series(
            label,
            [int(r[0]) for r in rows],
            [float(r[1]) for r in rows],
            [float(r[2]) if r[1] else None for r in rows],
        )

    def from_dicts(
        label: str, rows: list[dict[str, Any]], second: str, count: str, p99: str | None
    ) -> Series:
        return Series(
            label,
            [int(r[second]) for r in rows],
            [float(r[count]) for r in rows],
            [float(r[p99]) if p99 and r[count] else None for r in rows],
        )

    if scenario == "ingest":
        timeline = data.get("timeline", {})
        return [
            from_triples("bare FastAPI endpoint (ceiling): acks", timeline.get("bare", [])),
            from_triples("order_ingest webhook: acks", timeline.get("ingest", [])),
        ]
    if scenario == "dispatch":
        return [
            from_triples(
                "OrderPaid published: acks, p99 publish ack", data.get("publish_timeline_per_s", [])
            ),
            from_dicts(
                "dispatch orders seen in feeds", data.get("timeline_per_s", []), "start_s", "count", "p99_ms"
            ),
        ]
    rows = data.get("timeline_per_s", [])
    return [
        from_dicts("orders created at the stand-in", rows, "second", "created", None),
        from_dicts("orders fully offered (paid → feed)", rows, "second", "offered", "offered_p99_ms"),
        from_dicts("orders told to WeChat (end to end)", rows, "second", "told", "told_p99_ms"),
        from_dicts(
            "ceiling: the reference chain's first two relays",
            data.get("ceiling_timeline_per_s", []),
            "start_s",
            "count",
            "p99_ms",
        ),
    ]


def plot(scenario: str, series: list[Series], out: Path, *, p99_target_ms: float, rate_target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for s in series:
        top.plot(s.seconds, s.per_second, label=s.label, linewidth=1.2)
        points = [(x, y) for x, y in zip(s.seconds, s.p99_ms, strict=True) if y is not None]
        if points:
            bottom.plot([x for x, _ in points], [y for _, y in points], label=s.label, linewidth=1.2)
    top.axhline(
        rate_target, color="grey", linestyle="--", linewidth=0.8, label=f"target rate {rate_target:g}/s"
    )
    bottom.axhline(
        p99_target_ms, color="red", linestyle="--", linewidth=0.8, label=f"p99 target {p99_target_ms:g} ms"
    )
    top.set_ylabel("per second")
    top.set_title(TITLES[scenario], fontsize=10)
    bottom.set_ylabel("p99 latency in that second, ms (log)")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the start of the load")
    for axes in (top, bottom):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def plot_rss(processes: list[ProcessRow], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{p.scenario}: {p.process}" for p in processes]
    values = [p.peak_rss_mib for p in processes]
    colours = [
        ("tab:red" if p.peak_rss_mib > SERVICE_RSS_TARGET_MIB else "tab:blue") if p.service else "tab:grey"
        for p in processes
    ]
    figure, axes = plt.subplots(figsize=(10, max(3.0, 0.28 * len(processes) + 1)))
    axes.barh(labels, values, color=colours)
    axes.axvline(
        SERVICE_RSS_TARGET_MIB,
        color="red",
        linestyle="--",
        linewidth=0.8,
        label=f"service target 200 MB ({SERVICE_RSS_TARGET_MIB:.1f} MiB)",
    )
    axes.set_xlabel("peak RSS, MiB (services blue/red, infrastructure and bench processes grey)")
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


# ---- Markdown (pure) ---------------------------------------------------------------------------------------


def _cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    return _num(value, unit)


def _ratio(r: float | None) -> str:
    if r is None:
        return "–"
    return f"{r:.2f}" if r < 10 else f"{r:,.0f}×"


def results_table(rows: list[Row]) -> list[str]:
    lines = [
        "| scenario | figure | value | ceiling (same run) | ratio to ceiling | target | verdict | note |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        r = ratio(row.value, row.ceiling)
        if row.target is None:
            target, verdict = "–", "–"
        else:
            sign = "≤" if row.target.kind == "max" else "≥"
            target = f"{sign} {_num(row.target.bound, row.target.unit)}"
            if row.target.at_rate:
                target += f" at {row.target.at_rate:g}/s"
            met, verdict = judge(row.value, row.target, row.rate)
            verdict = f"**{'met' if met else 'MISSED'}**: {verdict}"
        lines.append(
            f"| {row.scenario} | {row.figure} | {_cell(row.value)} | {_cell(row.ceiling)} | "
            f"{_ratio(r)} | {target} | {verdict} | {row.note} |"
        )
    return lines


def processes_table(processes: list[ProcessRow]) -> list[str]:
    lines = [
        "| scenario | process | CPU s in the measured run | CPU % of one core | peak RSS MiB | RSS target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for p in processes:
        share = f"{100 * p.cpu_s / p.window_s:.0f}" if p.window_s else "–"
        if p.service:
            met, verdict = judge(p.peak_rss_mib, Target(SERVICE_RSS_TARGET_MIB, "max", "MiB"))
            bound = f"≤ 200 MB ({SERVICE_RSS_TARGET_MIB:.1f} MiB)"
            target = f"{bound}: **{'met' if met else 'MISSED'}** ({verdict})"
        else:
            target = "– (not a service)"
        lines.append(
            f"| {p.scenario} | {p.process} | {p.cpu_s:.1f} | {share} | {p.peak_rss_mib:.0f} | {target} |"
        )
    return lines


def render(
    results: dict[str, tuple[Path, dict[str, Any]]],
    plots: dict[str, str],
    profiles: list[str],
) -> str:
    rows = [
        row for scenario in SCENARIOS if scenario in results for row in ROWS[scenario](results[scenario][1])
    ]
    processes = [
        p
        for scenario in SCENARIOS
        if scenario in results
        for p in process_rows(scenario, results[scenario][1])
    ]
    missed = [
        (row, verdict)
        for row in rows
        if row.target is not None
        for met, verdict in [judge(row.value, row.target, row.rate)]
        if not met
    ]
    over = [p for p in processes if p.service and p.peak_rss_mib > SERVICE_RSS_TARGET_MIB]
    lines = [
        "# Benchmark report",
        "",
        "Generated by `lvyue bench report` from the newest result of each scenario. Open loop (arrivals at a "
        "fixed rate whatever the answers), latencies from each request's scheduled start (HdrHistogram). "
        "Ceilings are measured in the same run on the same machine: a bare FastAPI endpoint (ingest), bare "
        "aiokafka through the same number of Kafka hops (dispatch: one consumer), and for e2e a reference "
        "chain doing the line's work per order bare (aiokafka relays, an HTTP echo, insert_many; its first "
        "two relays beside paid → supplier feed, its CPU per order beside the line's). Ratio to ceiling = "
        "value ÷ ceiling (latency: times slower; throughput: share reached; CPU: times the reference's).",
        "",
        "## Sources",
        "",
    ]
    for scenario in SCENARIOS:
        if scenario in results:
            path, data = results[scenario]
            lines.append(f"- {TITLES[scenario]}: `{path.name}`; machine: {machine_note(scenario, data)}")
        else:
            lines.append(f"- {TITLES[scenario]}: no result (run `lvyue bench {scenario}`)")
    lines += ["", "## Figures", "", *results_table(rows), ""]
    lines += ["## Targets missed", ""]
    if missed or over:
        lines += [f"- {row.scenario}: {row.figure}: {verdict}" for row, verdict in missed]
        lines += [
            f"- {p.scenario}: {p.process} peak RSS {p.peak_rss_mib:.0f} MiB: missed by "
            f"{p.peak_rss_mib - SERVICE_RSS_TARGET_MIB:.1f} MiB "
            f"(target 200 MB = {SERVICE_RSS_TARGET_MIB:.1f} MiB)"
            for p in over
        ]
    else:
        lines.append("- none")
    lines += ["", "## Processes: CPU and peak RSS", "", *processes_table(processes), ""]
    lines += ["## Where the time goes (py-spy)", ""]
    lines += profiles or [
        "- no profile in these results (`--profile` on `bench ingest|dispatch|e2e` records one)"
    ]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in plots.items()]
    lines.append("")
    return "\n".join(lines)


def profile_lines(
    results: dict[str, tuple[Path, dict[str, Any]]], directory: Path, top: int = 6
) -> list[str]:
    lines: list[str] = []
    for scenario in SCENARIOS:
        if scenario not in results:
            continue
        data = results[scenario][1]
        found: dict[str, str] = {}
        if scenario == "ingest" and (directory / "ingest-profile.svg").exists():
            found["order_ingest webhook"] = str(directory / "ingest-profile.svg")
        if scenario == "dispatch" and data.get("profile"):
            found["dispatch"] = str(data["profile"])
        if scenario == "e2e":
            found.update(data.get("profiles") or {})
        for process, where in found.items():
            path = Path(where)
            lines.append(f"- {scenario}, {process}: `{path.name}`")
            if path.suffix == ".json" and path.exists():
                shares = speedscope_inclusive(json.loads(path.read_text()), top)
                lines += [f"  - {100 * share:.0f}% {name}" for name, share in shares]
    return lines


def bench_report(
    results: Annotated[Path, typer.Option(help="Directory of the benchmarks' JSON results.")] = REPO_ROOT
    / "bench-results",
) -> None:
    """REPORT.md and PNG plots from the newest result of each scenario (ingest, dispatch, e2e)."""
    found = latest_results(results)
    if not found:
        console.print(f"[red]no results in {results}: run `make bench` first[/]")
        raise typer.Exit(1)
    loaded = {s: (found[s], json.loads(found[s].read_text())) for s in SCENARIOS if s in found}
    plots: dict[str, str] = {}
    for scenario, (_, data) in loaded.items():
        p99_target, rate_target, _ = TARGETS[scenario]
        file = f"{scenario}.png"
        plot(
            scenario,
            timelines(scenario, data),
            results / file,
            p99_target_ms=p99_target,
            rate_target=rate_target,
        )
        plots[TITLES[scenario]] = file
    processes = [p for s in SCENARIOS if s in loaded for p in process_rows(s, loaded[s][1])]
    plot_rss(processes, results / "rss.png")
    plots["Peak RSS per process"] = "rss.png"
    out = results / "REPORT.md"
    out.write_text(render(loaded, plots, profile_lines(loaded, results)))
    console.print(
        f"report: {out} (from {', '.join(p.name for p in found.values())}); "
        f"plots: {', '.join(plots.values())}"
    )
