"""Scripted faults: what the next calls and pushes should suffer (pure bookkeeping, no I/O).

API faults match a path (or every WeChat API path when `path` is None) and are used up one call at a
time. Push faults act on the pushes queued next.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ErrcodeFault:
    errcode: int
    remaining: int
    path: str | None = None


@dataclass
class DelayFault:
    ms: int
    remaining: int | None = None  # None: every call until cleared
    path: str | None = None


@dataclass
class DuplicateFault:
    times: int  # extra copies of each affected push
    remaining: int  # pushes still to duplicate


@dataclass
class HoldFault:
    remaining: int | None  # pushes still to hold before releasing them all in reverse; None: until released


def _matches(fault_path: str | None, path: str) -> bool:
    return fault_path is None or fault_path == path


class FaultPlan:
    def __init__(self) -> None:
        self.errcodes: list[ErrcodeFault] = []
        self.delays: list[DelayFault] = []
        self.duplicate: DuplicateFault | None = None
        self.hold: HoldFault | None = None

    def add_errcode(self, errcode: int, *, count: int, path: str | None = None) -> None:
        self.errcodes.append(ErrcodeFault(errcode, count, path))

    def add_delay(self, ms: int, *, count: int | None = None, path: str | None = None) -> None:
        self.delays.append(DelayFault(ms, count, path))

    def set_duplicate(self, times: int, *, count: int = 1) -> None:
        self.duplicate = DuplicateFault(times, count)

    def take_errcode(self, path: str) -> int | None:
        """The errcode the call to `path` must answer, used up; None when no fault applies."""
        for fault in self.errcodes:
            if _matches(fault.path, path) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.errcodes.remove(fault)
                return fault.errcode
        return None

    def take_delay_ms(self, path: str) -> int:
        for fault in self.delays:
            if _matches(fault.path, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.delays.remove(fault)
                return fault.ms
        return 0

    def take_push_copies(self) -> int:
        """How many extra copies of the push being queued to send."""
        fault = self.duplicate
        if fault is None:
            return 0
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.duplicate = None
        return fault.times

    def clear(self) -> None:
        self.errcodes.clear()
        self.delays.clear()
        self.duplicate = None
        self.hold = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "errcodes": [asdict(f) for f in self.errcodes],
            "delays": [asdict(f) for f in self.delays],
            "duplicate_pushes": asdict(self.duplicate) if self.duplicate else None,
            "hold_pushes": asdict(self.hold) if self.hold else None,
        }
