"""application/x-www-form-urlencoded bodies as both carriers send them: UTF-8, '+' for space, one value
per field. Signatures cover the decoded field value, so decoding must be exact."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from shared.carriers.errors import CarrierFormatError, FormatErrorCode


def parse_form(body: bytes | str) -> dict[str, str]:
    """Field -> value (the first, if a field repeats)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CarrierFormatError(FormatErrorCode.BAD_ENCODING, str(exc)) from exc
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def encode_form(fields: Mapping[str, str]) -> bytes:
    return urlencode(dict(fields), encoding="utf-8").encode("ascii")


def require(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise CarrierFormatError(FormatErrorCode.MISSING_FIELD, f"form field {name!r} is missing")
    return value
