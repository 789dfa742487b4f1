"""What the command fast path takes itself and what it leaves to the route (no I/O)."""

import pytest

from services.dispatch.command_endpoint import COMMAND_PATH, COMMANDS, idempotency_key_of
from shared.api.supplier import AcceptRequest


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"headers": list(headers)}


def test_an_idempotency_key_is_taken_only_when_the_route_would_take_it_as_is() -> None:
    assert idempotency_key_of(_scope()) == (True, None)
    assert idempotency_key_of(_scope((b"idempotency-key", b"ship-1"))) == (True, "ship-1")
    assert idempotency_key_of(_scope((b"idempotency-key", b"k" * 255))) == (True, "k" * 255)
    assert idempotency_key_of(_scope((b"idempotency-key", b"k" * 256)))[0] is False  # route: 422
    assert idempotency_key_of(_scope((b"idempotency-key", "键".encode())))[0] is False
    repeated = _scope((b"idempotency-key", b"a"), (b"idempotency-key", b"b"))
    assert idempotency_key_of(repeated)[0] is False


@pytest.mark.parametrize(
    ("path", "taken"),
    [
        ("/supplier/v1/dispatch-orders/123-1/accept", ("123-1", "accept")),
        ("/supplier/v1/dispatch-orders/123-1/shipments", ("123-1", "shipments")),
        ("/supplier/v1/dispatch-orders/123-1/reject", None),
        ("/supplier/v1/dispatch-orders/123-1/accept/", None),
        ("/supplier/v1/dispatch-orders/12%2F3/accept", None),
        ("/supplier/v1/dispatch-orders/" + "1" * 65 + "/accept", None),  # the route's 64 at most
    ],
)
def test_the_commands_taken(path: str, taken: tuple[str, str] | None) -> None:
    matched = COMMAND_PATH.fullmatch(path)
    assert (matched.groups() if matched else None) == taken


def test_an_estimated_ship_time_in_the_past_is_the_routes_to_refuse() -> None:
    accept = COMMANDS["accept"]
    assert (
        accept.decision(AcceptRequest.model_validate({"estimated_ship_at": "2001-01-01T00:00:00Z"})) is None
    )
    assert accept.decision(AcceptRequest()) is not None
