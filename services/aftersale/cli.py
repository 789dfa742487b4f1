"""`lvyue aftersale ...`: the operators' view of after-sale cases, through the running service."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared.operators import TOKEN_FILE_VARIABLE, TOKEN_VARIABLE, operator_token
from shared.settings import AftersaleSettings

app = typer.Typer(help="After-sale cases: list, show, approve, reject, re-ship; shop policies.")
console = Console()
err_console = Console(stderr=True)


def _call(method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
    settings = AftersaleSettings()
    base = f"http://{settings.http_host}:{settings.http_port}/admin/v1"
    token = operator_token()
    if token is None:
        err_console.print(
            f"[red]no operator token: set {TOKEN_VARIABLE}, or {TOKEN_FILE_VARIABLE} to a file holding one "
            "(`lvyue operator token create`)[/red]"
        )
        raise typer.Exit(1)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        answer = httpx.request(method, base + path, json=body, params=params, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]the aftersale service at {base} did not answer: {exc}[/red]")
        raise typer.Exit(1) from exc
    if answer.status_code >= 400:
        err_console.print(f"[red]{answer.status_code}: {answer.text}[/red]")
        raise typer.Exit(1 if answer.status_code < 500 else 2)
    return answer.json()


@app.command("list")
def list_cases(
    state: Annotated[str | None, typer.Option(help="e.g. awaiting_operator")] = None,
    order_id: Annotated[str | None, typer.Option()] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only cases not ended.")] = False,
) -> None:
    """Cases, newest first."""
    params = {k: v for k, v in {"state": state, "order_id": order_id, "open_only": open_only}.items() if v}
    items = _call("GET", "/cases", params=params)["items"]
    table = Table(title=f"After-sale cases: {len(items)}")
    for column in ("case", "order", "type", "state", "WeChat status", "refund ¥", "deadline", "last"):
        table.add_column(column)
    for case in items:
        last = case["timeline"][-1] if case["timeline"] else {"what": "", "reason": ""}
        table.add_row(
            case["case_id"],
            case["order_id"],
            case["case_type"],
            case["state"] or "",
            case["wechat_status"],
            f"{case['refund_fen'] / 100:.2f}",
            (case["deadline"] or "")[:16],
            f"{last['what']} {last['reason']}"[:60],
        )
    console.print(table)


@app.command("show")
def show(case_id: Annotated[str, typer.Argument()]) -> None:
    """One case and its timeline."""
    case = _call("GET", f"/cases/{case_id}")
    console.print({k: v for k, v in case.items() if k != "timeline"})
    table = Table(title="Timeline")
    for column in ("at", "what", "reason"):
        table.add_column(column)
    for entry in case["timeline"]:
        table.add_row(entry["at"][:19], entry["what"], entry["reason"])
    console.print(table)


@app.command("approve")
def approve(case_id: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()] = "") -> None:
    """Approve a case held for an operator; it proceeds at once."""
    case = _call("POST", f"/cases/{case_id}/approve", {"reason": reason})
    console.print(f"case {case_id}: {case['state']}")


@app.command("reject")
def reject(case_id: Annotated[str, typer.Argument()], reason: Annotated[str, typer.Option()]) -> None:
    """Reject a case at WeChat with a reason."""
    case = _call("POST", f"/cases/{case_id}/reject", {"reason": reason})
    console.print(f"case {case_id}: {case['state']}")


@app.command("reship")
def reship(
    shop_id: Annotated[str, typer.Option()],
    order_id: Annotated[str, typer.Option()],
    line: Annotated[list[str], typer.Option(help="PRODUCT_ID:SKU_ID:COUNT, repeatable")],
    reason: Annotated[str, typer.Option(help="lost, damaged, ...")],
) -> None:
    """Re-ship (补发) lost or damaged units: a replacement dispatch order for the same supplier."""
    lines = []
    for spec in line:
        try:
            product_id, sku_id, count = spec.split(":")
            lines.append({"product_id": product_id, "sku_id": sku_id, "count": int(count)})
        except ValueError as exc:
            err_console.print(f"[red]--line {spec!r}: expected PRODUCT_ID:SKU_ID:COUNT[/red]")
            raise typer.Exit(2) from exc
    body = {"shop_id": shop_id, "order_id": order_id, "lines": lines, "reason": reason}
    case = _call("POST", "/reships", body)
    state = case["state"] or "to be decided once dispatch's view of the order arrives"
    console.print(f"re-ship case {case['case_id']}: {state}")


@app.command("policy")
def policy(
    shop_id: Annotated[str, typer.Option()],
    auto_refund_before_shipment: Annotated[
        bool, typer.Option(help="Refund-only before shipping: no person.")
    ] = True,
    auto_approve_under_fen: Annotated[int, typer.Option(help="Approve any refund below this (fen).")] = 0,
) -> None:
    """Set a shop's after-sale policy; everything else waits for an operator."""
    body = {
        "shop_id": shop_id,
        "auto_refund_before_shipment": auto_refund_before_shipment,
        "auto_approve_under_fen": auto_approve_under_fen,
    }
    console.print(json.dumps(_call("PUT", f"/policies/{shop_id}", body), ensure_ascii=False))
