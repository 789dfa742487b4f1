"""`lvyue operator token ...` and `lvyue audit`: operator tokens (shown once, stored hashed, expiring,
revocable) and the trail of what operators did with them. Both read the database directly, as the
other management commands do: whoever runs them has the database's credentials already."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shared.db import create_mongo_client, database, ensure_indexes
from shared.operators import (
    INDEXES,
    NAME_PATTERN,
    TOKEN_FILE_VARIABLE,
    TOKEN_VARIABLE,
    AuditTrail,
    OperatorRole,
    OperatorTokenError,
    OperatorTokens,
)
from shared.settings import MongoSettings

operator_app = typer.Typer(help="Operators: tokens for the operators' APIs (`lvyue aftersale ...`).")
token_app = typer.Typer(help="Operator tokens: create (shown once), list, revoke.")
operator_app.add_typer(token_app, name="token")
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _with_db(action: Callable[[OperatorTokens, AuditTrail], Awaitable[T]]) -> T:
    settings = MongoSettings()

    async def run() -> T:
        client = create_mongo_client(settings, app_name="lvyue-cli")
        try:
            db = database(client, settings)
            await ensure_indexes(db, INDEXES)
            return await action(OperatorTokens(db), AuditTrail(db))
        finally:
            await client.close()

    return asyncio.run(run())


@token_app.command("create")
def create_token(
    name: Annotated[str, typer.Option(help="Who holds it (in the audit trail).", show_default=False)],
    role: Annotated[
        OperatorRole, typer.Option(help="viewer reads; decider decides cases; admin sets policies.")
    ],
    expires_in_days: Annotated[float, typer.Option(min=0.01, help="Days until it stops working.")] = 90,
    to_file: Annotated[
        Path | None, typer.Option(help="Write the token to this file (mode 600) instead of printing it.")
    ] = None,
) -> None:
    """Create a token. It is shown once; only its hash is stored."""
    if not re.fullmatch(NAME_PATTERN, name):
        err_console.print(f"[red]a name matches {NAME_PATTERN}[/red]")
        raise typer.Exit(2)
    issued = _with_db(lambda tokens, _: tokens.create(name, role, lifetime=timedelta(days=expires_in_days)))
    if to_file is not None:
        descriptor = os.open(to_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(issued.token + "\n")
        console.print(f"token {issued.record.token_id} for {name} ({role}) written to {to_file}")
    else:
        console.print(issued.token)
        expires = f"{issued.record.expires_at:%Y-%m-%d %H:%M} UTC"
        err_console.print(
            f"token {issued.record.token_id} for {name} ({role}), expires {expires}. It is not shown "
            f"again: keep it in {TOKEN_VARIABLE}, or in a file named by {TOKEN_FILE_VARIABLE}."
        )


@token_app.command("list")
def list_tokens() -> None:
    """Every token: who, role, expiry, revoked or not (never the secret)."""
    records = _with_db(lambda tokens, _: tokens.every())
    table = Table(title=f"Operator tokens: {len(records)}")
    for column in ("token id", "name", "role", "created", "expires", "revoked"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.token_id,
            record.name,
            record.role,
            f"{record.created_at:%Y-%m-%d %H:%M}",
            f"{record.expires_at:%Y-%m-%d %H:%M}",
            "" if record.revoked_at is None else f"{record.revoked_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@token_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token id (the part after lvop_).")],
) -> None:
    """Revoke a token: the services refuse it once their cache of it expires (30 s by default)."""
    try:
        _with_db(lambda tokens, _: tokens.revoke(token_id))
    except OperatorTokenError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"revoked {token_id}")


def audit(
    operator: Annotated[str | None, typer.Option(help="Only this operator's actions.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Only actions on this, e.g. case:<id> or shop:<id>.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """What operators did, newest first: who, what, on what, and how it ended."""
    entries = _with_db(lambda _, trail: trail.entries(operator=operator, target=target, limit=limit))
    table = Table(title=f"Operator actions: {len(entries)} (newest first)")
    for column in ("at (UTC)", "operator", "role", "action", "target", "outcome", "details"):
        table.add_column(column)
    for entry in entries:
        details = ", ".join(f"{k}={v}" for k, v in entry.details.items())
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.operator,
            entry.role,
            entry.action,
            entry.target,
            entry.outcome,
            details[:80],
        )
    console.print(table)
