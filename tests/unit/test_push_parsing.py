"""Push envelopes and events: every format round-trips, and any bytes at all give a PushParseError
or a parsed document, never another exception (the webhook turns those into a 400, never a 500)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.wechat.crypto import MessageCipher, signature_matches
from shared.wechat.push import (
    PushFormat,
    PushParseError,
    build_push,
    detect_format,
    encrypted_field,
    parse_document,
    parse_event,
)

EVENT = {
    "ToUserName": "gh_97417a04a28d",
    "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY",
    "CreateTime": 1714037059,
    "MsgType": "event",
    "Event": "channels_ec_order_ext_info_update",
    "order_info": {"order_id": 3705115058471208928, "type": 7},
}


@pytest.mark.parametrize("fmt", list(PushFormat))
def test_safe_mode_push_round_trips_in_both_formats(fmt: PushFormat) -> None:
    cipher = MessageCipher("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx1234567890abcdef")
    push = build_push(EVENT, token="tok", fmt=fmt, cipher=cipher, timestamp=1714037059, nonce="7")
    assert detect_format(push.body) is fmt
    encrypted = encrypted_field(parse_document(push.body, fmt))
    assert signature_matches(push.query["msg_signature"], "tok", "1714037059", "7", encrypted)
    event = parse_event(parse_document(cipher.decrypt(encrypted), fmt))
    assert event.event == "channels_ec_order_ext_info_update"
    assert event.order_id == "3705115058471208928"  # exact, as a JSON number or XML text
    assert event.dedupe_key == "channels_ec_order_ext_info_update:3705115058471208928:1714037059:7"


def test_xml_with_a_doctype_is_refused() -> None:
    body = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>'
    with pytest.raises(PushParseError):
        parse_document(body, PushFormat.XML)


@pytest.mark.parametrize(
    ("document", "problem"), [({}, "Event"), ({"Event": "x", "CreateTime": "soon"}, "CreateTime")]
)
def test_events_without_the_common_fields_are_refused(document: dict[str, object], problem: str) -> None:
    with pytest.raises(PushParseError, match=problem):
        parse_event(document)


@given(st.binary(max_size=2000), st.sampled_from(list(PushFormat)))
def test_arbitrary_bytes_never_raise_anything_but_push_parse_error(body: bytes, fmt: PushFormat) -> None:
    try:
        document = parse_document(body, fmt)
    except PushParseError as exc:
        assert exc.detail
    else:
        assert isinstance(document, dict)
        try:
            parse_event(document)
        except PushParseError as exc:
            assert exc.detail


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_value_is_a_document_or_a_clear_error(value: object) -> None:
    import json

    body = json.dumps(value).encode()
    try:
        document = parse_document(body, PushFormat.JSON)
    except PushParseError:
        assert not isinstance(value, dict)
    else:
        assert document == value
