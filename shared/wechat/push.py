"""WeChat Shop message pushes: the envelope on the wire (JSON or XML, plaintext or safe mode) and the
decrypted event inside it. Parsing (for the webhook) and building (for the stand-in) live together so
both sides speak exactly the same format.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as StdET
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml_safely

from shared.wechat.crypto import MessageCipher, sha1_signature


class PushFormat(StrEnum):
    JSON = "json"
    XML = "xml"


class PushErrorCode(StrEnum):
    MALFORMED_BODY = "malformed_body"
    MISSING_ENCRYPT = "missing_encrypt"
    MISSING_EVENT = "missing_event"


class PushParseError(Exception):
    def __init__(self, code: PushErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


def detect_format(body: bytes, content_type: str | None = None) -> PushFormat:
    if content_type and "xml" in content_type.lower():
        return PushFormat.XML
    if content_type and "json" in content_type.lower():
        return PushFormat.JSON
    return PushFormat.XML if body.lstrip()[:1] == b"<" else PushFormat.JSON


def _xml_to_dict(element: StdET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    result: dict[str, Any] = {}
    for child in children:
        value = _xml_to_dict(child)
        if child.tag in result:  # repeated elements become a list
            existing = result[child.tag]
            result[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[child.tag] = value
    return result


def parse_document(body: bytes, fmt: PushFormat) -> dict[str, Any]:
    """A push body (envelope or decrypted event) as a dict. JSON numbers stay exact Python ints,
    so a 64-bit order_id sent as a JSON number keeps every digit. XML values are strings."""
    try:
        if fmt is PushFormat.JSON:
            document = json.loads(body)
        else:
            root = parse_xml_safely(body, forbid_dtd=True)
            document = _xml_to_dict(root)
    except (ValueError, StdET.ParseError, DefusedXmlException, UnicodeDecodeError) as exc:
        raise PushParseError(PushErrorCode.MALFORMED_BODY, f"not valid {fmt.value}: {exc}"[:300]) from exc
    if not isinstance(document, dict):
        raise PushParseError(PushErrorCode.MALFORMED_BODY, f"the {fmt.value} body is not an object")
    return document


def encrypted_field(envelope: Mapping[str, Any]) -> str:
    value = envelope.get("Encrypt")
    if not isinstance(value, str) or not value:
        raise PushParseError(PushErrorCode.MISSING_ENCRYPT, "safe-mode body without Encrypt")
    return value


@dataclass(frozen=True)
class PushEvent:
    """A decrypted push: the common fields plus the whole document for the worker."""

    event: str
    to_user_name: str
    create_time: int
    document: dict[str, Any]

    @property
    def order_id(self) -> str | None:
        for holder in ("order_info", "finder_shop_aftersale_status_update"):
            inner = self.document.get(holder)
            if isinstance(inner, dict) and inner.get("order_id") not in (None, ""):
                return str(inner["order_id"])
        return None

    @property
    def after_sale_order_id(self) -> str | None:
        inner = self.document.get("finder_shop_aftersale_status_update")
        if isinstance(inner, dict) and inner.get("after_sale_order_id") not in (None, ""):
            return str(inner["after_sale_order_id"])
        return None

    @property
    def ewaybill_order_id(self) -> str | None:
        inner = self.document.get("waybill_info")
        if isinstance(inner, dict) and inner.get("ewaybill_order_id") not in (None, ""):
            return str(inner["ewaybill_order_id"])
        return None

    @property
    def subject_id(self) -> str:
        """What the event is about: the order, else the after-sale case, else the e-waybill."""
        return self.order_id or self.after_sale_order_id or self.ewaybill_order_id or ""

    @property
    def dedupe_key(self) -> str:
        """WeChat documents no dedupe key; (Event, subject, CreateTime, detail) identifies one push."""
        detail = ""
        for holder, field in (
            ("order_info", "type"),
            ("finder_shop_aftersale_status_update", "status"),
            ("waybill_info", "status"),
        ):
            inner = self.document.get(holder)
            if isinstance(inner, dict) and field in inner:
                detail = str(inner[field])
        return f"{self.event}:{self.subject_id}:{self.create_time}:{detail}"


def parse_event(document: Mapping[str, Any]) -> PushEvent:
    event = document.get("Event")
    if not isinstance(event, str) or not event:
        raise PushParseError(PushErrorCode.MISSING_EVENT, "push without Event")
    try:
        create_time = int(document.get("CreateTime", 0))
    except (TypeError, ValueError) as exc:
        raise PushParseError(PushErrorCode.MALFORMED_BODY, "CreateTime is not an integer") from exc
    return PushEvent(event, str(document.get("ToUserName", "")), create_time, dict(document))


# ---- building pushes (the stand-in's side) ------------------------------------------------------------


def _dict_to_xml(tag: str, value: Any) -> str:
    if isinstance(value, Mapping):
        inner = "".join(_dict_to_xml(k, v) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, list):
        return "".join(_dict_to_xml(tag, v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"<{tag}>{value}</{tag}>"
    text = str(value).replace("]]>", "]]]]><![CDATA[>")  # a CDATA section cannot contain its own end
    return f"<{tag}><![CDATA[{text}]]></{tag}>"


def render_document(document: Mapping[str, Any], fmt: PushFormat) -> bytes:
    if fmt is PushFormat.JSON:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return _dict_to_xml("xml", document).encode()


@dataclass(frozen=True)
class SignedPush:
    query: dict[str, str]
    body: bytes
    content_type: str


def build_push(
    event: Mapping[str, Any],
    *,
    token: str,
    fmt: PushFormat = PushFormat.JSON,
    cipher: MessageCipher | None = None,
    timestamp: int | None = None,
    nonce: str = "1514711492",
) -> SignedPush:
    """What WeChat sends: query (signature[, encrypt_type, msg_signature]) and body."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    content_type = "application/json" if fmt is PushFormat.JSON else "text/xml"
    query = {"signature": sha1_signature(token, ts, nonce), "timestamp": ts, "nonce": nonce}
    plain = render_document(event, fmt)
    if cipher is None:
        return SignedPush(query, plain, content_type)
    encrypted = cipher.encrypt(plain)
    envelope = {"ToUserName": str(event.get("ToUserName", "")), "Encrypt": encrypted}
    query |= {"encrypt_type": "aes", "msg_signature": sha1_signature(token, ts, nonce, encrypted)}
    return SignedPush(query, render_document(envelope, fmt), content_type)


__all__ = [
    "PushErrorCode",
    "PushEvent",
    "PushFormat",
    "PushParseError",
    "SignedPush",
    "build_push",
    "detect_format",
    "encrypted_field",
    "parse_document",
    "parse_event",
    "render_document",
]
