"""Why a carrier request or push could not be read: an enum code with a reason, so callers can answer
with the right reply and dead-letter with a stable code."""

from __future__ import annotations

from enum import StrEnum


class FormatErrorCode(StrEnum):
    BAD_ENCODING = "bad_encoding"  # the body is not UTF-8 form data
    MISSING_FIELD = "missing_field"  # a form field the format requires is absent
    BAD_JSON = "bad_json"  # a JSON field does not parse
    INVALID_DOCUMENT = "invalid_document"  # parses, but does not have the format's shape
    SIGNATURE_MISMATCH = "signature_mismatch"  # missing or wrong sign / DataSign
    UNEXPECTED_REQUEST_TYPE = "unexpected_request_type"  # Kdniao RequestType is not the one expected


class CarrierFormatError(ValueError):
    def __init__(self, code: FormatErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
