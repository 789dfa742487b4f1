"""Helpers for tests that drive the stand-in in-process."""

from __future__ import annotations

DOC_TIME = 1_714_037_059.0  # the timestamp of WeChat's own plaintext-push example


class FakeClock:
    """A clock for SimState: returns `now` until told to move."""

    def __init__(self, start: float = DOC_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
