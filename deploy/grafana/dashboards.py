"""Lüyue's Grafana dashboards, built with grafanalib.

    python deploy/grafana/dashboards.py          # writes deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --check  # exits 1 if the committed JSON is not current

The JSON is committed and provisioned by deploy/grafana/provisioning/dashboards/lvyue.yml; edit this file,
never the JSON (tests/unit/test_dashboards.py checks that they agree and that every metric exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
    Dashboard,
    DashboardLink,
    GridPos,
    RowPanel,
    Target,
    Time,
    TimeSeries,
)

OUTPUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
SCHEMA_VERSION = 39  # Grafana 11: no migration of the panels on load
RATE = "$__rate_interval"
TAG = "lvyue"

# Prometheus job names (deploy/prometheus/prometheus.yml; ops/stack.py for the local stack).
SERVICE_JOBS = {
    "order_ingest": "order_ingest|order_ingest_worker",
    "dispatch": "dispatch",
    "logistics": "logistics",
    "aftersale": "aftersale",
}
ALL_JOBS = "|".join(SERVICE_JOBS.values())

# One series on a panel: a PromQL expression and its legend.
Query = tuple[str, str]


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[Query]
    unit: str = "short"
    description: str = ""
    stacked: bool = False
    bars: bool = False
    width: int = 8


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def quantiles(
    metric: str, by: str, legend: str, matchers: str = "", qs: Sequence[float] = (0.5, 0.99)
) -> list[Query]:
    """p50/p99 (or other quantiles) of a histogram, per `by` labels."""
    grouping = f"le, {by}" if by else "le"
    selector = f"{metric}_bucket{{{matchers}}}" if matchers else f"{metric}_bucket"
    return [
        (
            f"histogram_quantile({q}, sum by ({grouping}) (rate({selector}[{RATE}])))",
            f"{legend} p{round(q * 100)}".strip(),
        )
        for q in qs
    ]


def rate_by(metric: str, by: str, matchers: str = "") -> Query:
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return f"sum by ({by}) (rate({selector}[{RATE}]))", legend


def increase_by(metric: str, by: str, matchers: str = "") -> Query:
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return f"sum by ({by}) (increase({selector}[{RATE}]))", legend


def gauge_by(metric: str, by: str, matchers: str = "") -> Query:
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    if not by:
        return f"sum({selector})", metric
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return f"sum by ({by}) ({selector})", legend


def _timeseries(panel: Panel, grid: GridPos) -> TimeSeries:
    return TimeSeries(
        title=panel.title,
        description=panel.description or None,
        dataSource=DATASOURCE,
        targets=[
            Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i), datasource=DATASOURCE)
            for i, (expr, legend) in enumerate(panel.queries)
        ],
        unit=panel.unit,
        gridPos=grid,
        stacking={"mode": "normal", "group": "A"} if panel.stacked else {},
        drawStyle="bars" if panel.bars else "line",
        fillOpacity=60 if panel.bars else (20 if panel.stacked else 0),
        legendDisplayMode="table",
        legendPlacement="bottom",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        maxDataPoints=500,
    )


def dashboard(uid: str, title: str, description: str, rows: Sequence[Row]) -> Dashboard:
    """Rows of panels laid out left to right, 8 units high, wrapping at Grafana's 24 columns."""
    panels: list[Any] = []
    y = 0
    for row in rows:
        panels.append(RowPanel(title=row.title, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_timeseries(panel, GridPos(h=8, w=panel.width, x=x, y=y)))
            x += panel.width
        y += 8
    return Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=[TAG],
        panels=panels,
        links=[DashboardLink(title="Lüyue", tags=[TAG], asDropdown=True, keepTime=True)],
        time=Time("now-6h", "now"),
        refresh="30s",
        timezone="browser",
        editable=False,
        graphTooltip=GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
    ).auto_panel_ids()


def _process_panels(jobs: str, by: str) -> list[Panel]:
    legend = f"{{{{{by}}}}}"
    return [
        Panel(
            "Resident memory",
            [(f'sum by ({by}) (process_resident_memory_bytes{{job=~"{jobs}"}})', legend)],
            unit="bytes",
            width=12,
        ),
        Panel(
            "CPU (cores)",
            [(f'sum by ({by}) (rate(process_cpu_seconds_total{{job=~"{jobs}"}}[{RATE}]))', legend)],
            width=12,
        ),
        Panel(
            "Garbage collector pauses (share of time the event loop stood still)",
            [
                (
                    f'sum by ({by}, generation) (rate(lvyue_gc_pause_seconds_sum{{job=~"{jobs}"}}[{RATE}]))',
                    f"{legend} gen {{{{generation}}}}",
                )
            ],
            unit="percentunit",
            width=12,
        ),
    ]


# --- the overview -------------------------------------------------------------------------------------


def overview() -> Dashboard:
    rows = [
        Row(
            "Orders through the stages",
            [
                Panel(
                    "WeChat pushes received, by outcome",
                    [rate_by("lvyue_webhooks_total", "outcome")],
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "Order events published (ingest), by type",
                    [rate_by("lvyue_order_events_published_total", "event_type")],
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Dispatch order changes, by event type",
                    [rate_by("lvyue_dispatch_transitions_total", "event_type")],
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Waybills issued, by source and result",
                    [rate_by("lvyue_logistics_waybills_total", "source, result")],
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "Parcels told to WeChat (delivery/send), by outcome",
                    [rate_by("lvyue_logistics_shipments_total", "outcome")],
                    unit="ops",
                    stacked=True,
                ),
                Panel(
                    "After-sale cases seen, by type",
                    [rate_by("lvyue_aftersale_cases_total", "type")],
                    unit="ops",
                    stacked=True,
                ),
            ],
        ),
        Row(
            "Latency",
            [
                Panel(
                    "Webhook acknowledgement (WeChat waits 5 s)",
                    quantiles("lvyue_webhook_ack_seconds", "", "ack"),
                    unit="s",
                    description="Alert LvyueWebhookAckSlow: p99 over 1 s for 10 minutes.",
                ),
                Panel(
                    "Paid → dispatched → accepted → shipped",
                    quantiles("lvyue_dispatch_stage_seconds", "stage", "{{stage}}"),
                    unit="s",
                    description="Alert LvyuePaidToDispatchedSlow: paid_to_dispatched p99 > 1 s for 10 min.",
                ),
                Panel(
                    "Ingest lag (push stored → order events published)",
                    quantiles("lvyue_ingest_lag_seconds", "", "lag"),
                    unit="s",
                ),
                Panel(
                    "Shipment reported → WeChat told",
                    quantiles("lvyue_logistics_shipped_to_wechat_seconds", "", "told"),
                    unit="s",
                ),
                Panel(
                    "Kafka processing p99, by consumer",
                    quantiles("lvyue_kafka_processing_seconds", "consumer", "{{consumer}}", qs=(0.99,)),
                    unit="s",
                ),
                Panel(
                    "WeChat API p99, by endpoint",
                    quantiles("lvyue_wechat_api_seconds", "endpoint", "{{endpoint}}", qs=(0.99,)),
                    unit="s",
                ),
            ],
        ),
        Row(
            "Dispatch",
            [
                Panel(
                    "Backlog per supplier",
                    [gauge_by("lvyue_dispatch_backlog", "supplier")],
                    stacked=True,
                    description="Offered, accepted and partly shipped orders. "
                    "Alerts: LvyueDispatchBacklogGrowing, LvyueSupplierNotAccepting.",
                ),
                Panel(
                    "Backlog by state",
                    [gauge_by("lvyue_dispatch_backlog", "state")],
                    stacked=True,
                ),
                Panel(
                    "Orders on hold, by reason",
                    [gauge_by("lvyue_dispatch_holds", "reason")],
                    stacked=True,
                    description="`lvyue holds` lists them. Alert LvyueDispatchHolds after 10 minutes.",
                ),
            ],
        ),
        Row(
            "Errors",
            [
                Panel(
                    "Dead letters, by consumer and reason",
                    [increase_by("lvyue_dead_letters_total", "consumer, reason")],
                    bars=True,
                    description="`lvyue dlq list` shows them; replay once the cause is fixed.",
                ),
                Panel(
                    "WeChat API calls, by errcode",
                    [rate_by("lvyue_wechat_api_calls_total", "errcode")],
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "delivery/send answers, by errcode",
                    [rate_by("lvyue_logistics_delivery_send_total", "errcode")],
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "HTTP 5xx, by service",
                    [rate_by("lvyue_http_requests_total", "service", 'status=~"5.."')],
                    unit="reqps",
                ),
                Panel(
                    "Kafka handler retries, by consumer",
                    [rate_by("lvyue_kafka_handler_retries_total", "consumer")],
                    unit="ops",
                ),
                Panel(
                    "Carrier callbacks, by carrier and outcome",
                    [rate_by("lvyue_logistics_carrier_callbacks_total", "carrier, outcome")],
                    unit="reqps",
                    description="signature_mismatch: alert LvyueCarrierCallbackBadSignature.",
                ),
            ],
        ),
        Row(
            "Logistics",
            [
                Panel(
                    "Parcels by tracking state",
                    [gauge_by("lvyue_logistics_parcels", "state")],
                    stacked=True,
                ),
                Panel(
                    "Deadline alerts open, by kind",
                    [gauge_by("lvyue_logistics_deadline_alerts_open", "kind")],
                    description="`lvyue late` lists them. ship_by_breached pages (LvyueShipByBreached).",
                ),
                Panel(
                    "Tracking updates, by source and result",
                    [rate_by("lvyue_logistics_tracking_updates_total", "source, result")],
                    unit="ops",
                    stacked=True,
                ),
            ],
        ),
        Row(
            "After-sale",
            [
                Panel(
                    "Open cases, by state",
                    [
                        gauge_by("lvyue_aftersale_open_cases", "state"),
                        ("sum(lvyue_aftersale_cases_near_deadline)", "near WeChat's deadline"),
                    ],
                    description="`lvyue aftersale list --state awaiting_operator` lists the cases waiting "
                    "for a person.",
                ),
                Panel(
                    "Resolution time, by type",
                    quantiles("lvyue_aftersale_resolution_seconds", "type", "{{type}}", qs=(0.5, 0.9)),
                    unit="s",
                ),
                Panel(
                    "Cases ended, by type and resolution",
                    [increase_by("lvyue_aftersale_outcomes_total", "type, resolution")],
                    bars=True,
                ),
            ],
        ),
        Row("Processes", _process_panels(ALL_JOBS, "job")),
    ]
    return dashboard(
        "lvyue-overview",
        "Lüyue overview",
        "Orders from WeChat push to parcel and after-sale: rates, latencies, backlogs, errors.",
        rows,
    )


# --- one dashboard per service ------------------------------------------------------------------------


def _common_rows(service: str, jobs: str) -> list[Row]:
    job = f'job=~"{jobs}"'
    return [
        Row(
            "HTTP",
            [
                Panel(
                    "Requests, by route and status",
                    [rate_by("lvyue_http_requests_total", "route, status", f'service="{service}"')],
                    unit="reqps",
                ),
                Panel(
                    "Latency p99, by route",
                    quantiles(
                        "lvyue_http_request_duration_seconds",
                        "route",
                        "{{route}}",
                        f'service="{service}"',
                        qs=(0.99,),
                    ),
                    unit="s",
                ),
                Panel(
                    "Requests in flight",
                    [gauge_by("lvyue_http_requests_in_flight", "", f'service="{service}"')],
                ),
            ],
        ),
        Row(
            "Kafka consumer",
            [
                Panel(
                    "Messages processed, by topic and outcome",
                    [rate_by("lvyue_kafka_messages_processed_total", "topic, outcome", job)],
                    unit="ops",
                ),
                Panel(
                    "Processing p99, by topic",
                    quantiles("lvyue_kafka_processing_seconds", "topic", "{{topic}}", job, qs=(0.99,)),
                    unit="s",
                ),
                Panel(
                    "Retries and dead letters",
                    [
                        rate_by("lvyue_kafka_handler_retries_total", "topic", job),
                        (
                            f"sum by (reason) (increase(lvyue_dead_letters_total{{{job}}}[{RATE}]))",
                            "dead: {{reason}}",
                        ),
                    ],
                ),
            ],
        ),
        Row(
            "WeChat Shop API",
            [
                Panel(
                    "Calls, by endpoint and errcode",
                    [rate_by("lvyue_wechat_api_calls_total", "endpoint, errcode", job)],
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Latency p99, by endpoint",
                    quantiles("lvyue_wechat_api_seconds", "endpoint", "{{endpoint}}", job, qs=(0.99,)),
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Database",
            [
                Panel(
                    "Time in database commands, by collection and command",
                    [rate_by("lvyue_db_command_seconds_sum", "collection, command", job)],
                    description="Seconds per second, as the client saw them (queueing included).",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Finds that matched nothing, by collection",
                    [rate_by("lvyue_db_command_seconds_count", "collection", f'{job}, result="empty"')],
                    description="FerretDB answers these by scanning the collection: a rising rate on a "
                    "growing collection is a query to change.",
                    unit="ops",
                    width=12,
                ),
            ],
        ),
        Row("Process", _process_panels(jobs, "instance")),
    ]


def _order_ingest_rows() -> list[Row]:
    return [
        Row(
            "Webhook and worker",
            [
                Panel(
                    "Pushes received, by event and outcome",
                    [rate_by("lvyue_webhooks_total", "event, outcome")],
                    unit="reqps",
                ),
                Panel(
                    "Acknowledgement latency (WeChat waits 5 s)",
                    quantiles("lvyue_webhook_ack_seconds", "", "ack", qs=(0.5, 0.9, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Pushes handled by the worker, by event and result",
                    [rate_by("lvyue_ingest_pushes_total", "event, result")],
                    unit="ops",
                ),
                Panel(
                    "Ingest lag (push stored → order events published)",
                    quantiles("lvyue_ingest_lag_seconds", "", "lag", qs=(0.5, 0.9, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Order events published, by type",
                    [rate_by("lvyue_order_events_published_total", "event_type")],
                    unit="ops",
                ),
                Panel(
                    "Reconciliation: orders no push brought, by shop",
                    [increase_by("lvyue_reconciled_orders_total", "shop")],
                    bars=True,
                ),
                Panel(
                    "Access tokens fetched, by shop",
                    [increase_by("lvyue_wechat_token_refreshes_total", "shop")],
                    bars=True,
                ),
            ],
        )
    ]


def _dispatch_rows() -> list[Row]:
    return [
        Row(
            "Dispatch",
            [
                Panel(
                    "Order events handled, by type and result",
                    [rate_by("lvyue_dispatch_order_events_total", "event_type, result")],
                    unit="ops",
                ),
                Panel(
                    "Dispatch order changes, by event type",
                    [rate_by("lvyue_dispatch_transitions_total", "event_type")],
                    unit="ops",
                ),
                Panel(
                    "Stage latency",
                    quantiles("lvyue_dispatch_stage_seconds", "stage", "{{stage}}", qs=(0.5, 0.9, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Backlog, by supplier and state",
                    [gauge_by("lvyue_dispatch_backlog", "supplier, state")],
                    stacked=True,
                ),
                Panel(
                    "Orders on hold, by reason",
                    [gauge_by("lvyue_dispatch_holds", "reason")],
                    stacked=True,
                ),
                Panel(
                    "Holds placed, by reason",
                    [increase_by("lvyue_dispatch_holds_placed_total", "reason")],
                    bars=True,
                ),
                Panel(
                    "Supplier calls refused: too many in flight for their key",
                    [increase_by("lvyue_dispatch_supplier_calls_over_in_flight_total", "instance")],
                    bars=True,
                ),
            ],
        ),
        Row(
            "WeChat drop-ship mirror (代发)",
            [
                Panel(
                    "Mirror calls, by call and outcome",
                    [rate_by("lvyue_dispatch_dropship_calls_total", "call, outcome")],
                    unit="reqps",
                    stacked=True,
                    width=12,
                    description="assign and cancel: done, refused (for good, recorded), blocked (the set-up: "
                    "dead-lettered), unclear (looked up before asking again); lookup_*: found or not_found. "
                    "Alert LvyueDropshipMirrorFailing: an assign or cancel refused or blocked in 10 minutes.",
                ),
                Panel(
                    "Dispatch orders not mirrored, by reason",
                    [increase_by("lvyue_dispatch_dropship_skipped_total", "reason")],
                    bars=True,
                    width=12,
                    description="shop_off: the shop has not turned the mirror on (`lvyue shop dropship`); "
                    "no_supplier_appid: the supplier has no WeChat appid (`lvyue supplier wechat-appid`); "
                    "replacement: after-sale replacements are never mirrored.",
                ),
            ],
        ),
    ]


def _logistics_rows() -> list[Row]:
    return [
        Row(
            "Logistics",
            [
                Panel(
                    "Parcels told to WeChat, by outcome",
                    [rate_by("lvyue_logistics_shipments_total", "outcome")],
                    unit="ops",
                ),
                Panel(
                    "delivery/send answers, by errcode",
                    [rate_by("lvyue_logistics_delivery_send_total", "errcode")],
                    unit="reqps",
                ),
                Panel(
                    "Shipment reported → WeChat told",
                    quantiles("lvyue_logistics_shipped_to_wechat_seconds", "", "told", qs=(0.5, 0.9, 0.99)),
                    unit="s",
                ),
                Panel(
                    "Waybills, by source and result",
                    [rate_by("lvyue_logistics_waybills_total", "source, result")],
                    unit="ops",
                ),
                Panel(
                    "Aggregator calls, by method and returnCode",
                    [rate_by("lvyue_logistics_aggregator_calls_total", "method, code")],
                    unit="reqps",
                ),
                Panel(
                    "Carrier callbacks, by carrier and outcome",
                    [rate_by("lvyue_logistics_carrier_callbacks_total", "carrier, outcome")],
                    unit="reqps",
                ),
                Panel(
                    "Tracking updates, by source and result",
                    [rate_by("lvyue_logistics_tracking_updates_total", "source, result")],
                    unit="ops",
                ),
                Panel(
                    "Parcels by tracking state",
                    [gauge_by("lvyue_logistics_parcels", "state")],
                    stacked=True,
                ),
                Panel(
                    "Deadline alerts: open and raised, by kind",
                    [
                        gauge_by("lvyue_logistics_deadline_alerts_open", "kind"),
                        (
                            f"sum by (kind) (increase(lvyue_logistics_deadline_alerts_total[{RATE}]))",
                            "raised: {{kind}}",
                        ),
                    ],
                ),
            ],
        )
    ]


def _aftersale_rows() -> list[Row]:
    return [
        Row(
            "After-sale",
            [
                Panel(
                    "Cases seen, by type",
                    [increase_by("lvyue_aftersale_cases_total", "type")],
                    bars=True,
                ),
                Panel(
                    "Open cases, by state",
                    [
                        gauge_by("lvyue_aftersale_open_cases", "state"),
                        ("sum(lvyue_aftersale_cases_near_deadline)", "near WeChat's deadline"),
                    ],
                ),
                Panel(
                    "Cases ended, by type and resolution",
                    [increase_by("lvyue_aftersale_outcomes_total", "type, resolution")],
                    bars=True,
                ),
                Panel(
                    "Actions, by kind and result",
                    [rate_by("lvyue_aftersale_actions_total", "kind, result")],
                    unit="ops",
                ),
                Panel(
                    "Resolution time, by type",
                    quantiles("lvyue_aftersale_resolution_seconds", "type", "{{type}}", qs=(0.5, 0.9, 0.99)),
                    unit="s",
                    width=16,
                ),
            ],
        )
    ]


SERVICE_ROWS = {
    "order_ingest": _order_ingest_rows,
    "dispatch": _dispatch_rows,
    "logistics": _logistics_rows,
    "aftersale": _aftersale_rows,
}


def service_dashboard(service: str) -> Dashboard:
    jobs = SERVICE_JOBS[service]
    return dashboard(
        f"lvyue-{service.replace('_', '-')}",
        f"Lüyue {service}",
        f"The {service} service: its own metrics, then HTTP, Kafka, WeChat API and process.",
        SERVICE_ROWS[service]() + _common_rows(service, jobs),
    )


def dashboards() -> dict[str, Dashboard]:
    """File name -> dashboard."""
    built = {"overview.json": overview()}
    for service in SERVICE_JOBS:
        built[f"{service}.json"] = service_dashboard(service)
    return built


def render(board: Dashboard) -> str:
    data = json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder))
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(board) for name, board in dashboards().items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON, write nothing")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = sorted(
            name
            for name, text in files.items()
            if not (OUTPUT / name).exists() or (OUTPUT / name).read_text(encoding="utf-8") != text
        )
        extra = sorted(p.name for p in OUTPUT.glob("*.json") if p.name not in files)
        for name in stale + extra:
            sys.stderr.write(f"{OUTPUT / name} is not what {Path(__file__).name} generates\n")
        return 1 if stale or extra else 0
    OUTPUT.mkdir(exist_ok=True)
    for stale_file in OUTPUT.glob("*.json"):
        if stale_file.name not in files:
            stale_file.unlink()
    for name, text in files.items():
        (OUTPUT / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
