"""Waybill numbers shaped like each carrier's (prefix and length), so logs and UIs look real and a
consumer that validates formats is exercised. Not check-digit exact."""

from __future__ import annotations

import random

from shared.carriers.codes import Carrier

# delivery_id -> (prefix, random digits after it)
_SHAPES: dict[str, tuple[str, int]] = {
    "ZTO": ("7", 13),  # 14 digits, 7...
    "YTO": ("YT", 13),
    "YUNDA": ("43", 11),  # 13 digits
    "JTSD": ("JT", 13),
    "STO": ("77", 11),  # 13 digits
    "SF": ("SF", 13),
    "JD": ("JDVA", 11),
    "EMS": ("11", 11),  # 13 digits
    "DBKD": ("DPK", 12),
}


def mint(carrier: Carrier, rng: random.Random) -> str:
    prefix, digits = _SHAPES.get(carrier.delivery_id, ("", 12))
    first = str(rng.randint(1, 9)) if not prefix else ""
    rest = "".join(str(rng.randint(0, 9)) for _ in range(digits - len(first)))
    return prefix + first + rest
