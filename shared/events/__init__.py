"""Typed, versioned messages: the envelope (base) and one module per topic's events."""

from shared.events.base import Event, OrderId, utc_now

__all__ = ["Event", "OrderId", "utc_now"]
