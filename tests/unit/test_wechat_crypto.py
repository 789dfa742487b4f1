"""WXBizMsgCrypt: the official vectors (WeChat docs and WeChat's SDK tests), round trips, tampering."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.wechat.crypto import (
    CryptoErrorCode,
    MessageCipher,
    WeChatCryptoError,
    decrypt_with_rotation,
    sha1_signature,
    signature_matches,
)

# WeChat Shop docs, message push: URL verification and plaintext POST.
DOC_TOKEN = "AAAAA"

# WeChat's SDK sample (WXBizMsgCryptTest.testAesEncrypt): fixed random prefix, known ciphertext.
SDK_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SDK_APPID = "wxb11529c136998cb6"
SDK_RANDOM = b"aaaabbbbccccdddd"
SDK_MESSAGE = "我是中文abcd123".encode()
SDK_CIPHERTEXT = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="

# WeChat docs' safe-mode push example: a key of 43 "A"s (32 zero bytes), event debug_demo.
DOC_SAFE_KEY = "A" * 43
DOC_SAFE_APPID = "wx134c8103faa5a59e"
DOC_SAFE_TIMESTAMP = "1715943329"
DOC_SAFE_NONCE = "1590219412"
DOC_SAFE_MSG_SIGNATURE = "6c12a4205838198b8fa631b3220723bb07f1015c"
DOC_SAFE_ENCRYPT = (
    "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+"
    "ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhH"
    "TtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G"
    "7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX"
    "/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg=="
)
OTHER_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def test_url_verification_vector_from_the_docs() -> None:
    assert sha1_signature(DOC_TOKEN, "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


def test_plaintext_post_vector_from_the_docs() -> None:
    assert signature_matches("899cf89e464efb63f54ddac96b0a0a235f53aa78", DOC_TOKEN, "1714037059", "486452656")
    assert not signature_matches(
        "899cf89e464efb63f54ddac96b0a0a235f53aa79", DOC_TOKEN, "1714037059", "486452656"
    )
    assert not signature_matches(None, DOC_TOKEN, "1714037059", "486452656")


def test_encryption_matches_the_sdk_vector() -> None:
    cipher = MessageCipher(SDK_KEY, SDK_APPID)
    assert cipher.encrypt(SDK_MESSAGE, random_prefix=SDK_RANDOM) == SDK_CIPHERTEXT
    assert cipher.decrypt(SDK_CIPHERTEXT) == SDK_MESSAGE


def test_safe_mode_push_from_the_docs_verifies_and_decrypts() -> None:
    assert signature_matches(
        DOC_SAFE_MSG_SIGNATURE, DOC_TOKEN, DOC_SAFE_TIMESTAMP, DOC_SAFE_NONCE, DOC_SAFE_ENCRYPT
    )
    message = MessageCipher(DOC_SAFE_KEY, DOC_SAFE_APPID).decrypt(DOC_SAFE_ENCRYPT)
    assert len(message) == 292
    assert b"<Event><![CDATA[debug_demo]]></Event>" in message


def test_wrong_appid_is_refused() -> None:
    with pytest.raises(WeChatCryptoError) as raised:
        MessageCipher(SDK_KEY, "wx_someone_else").decrypt(SDK_CIPHERTEXT)
    assert raised.value.code is CryptoErrorCode.APPID_MISMATCH


def test_tampered_ciphertext_is_refused() -> None:
    raw = bytearray(base64.b64decode(SDK_CIPHERTEXT))
    raw[-1] ^= 0x01  # the last block carries the padding
    with pytest.raises(WeChatCryptoError) as raised:
        MessageCipher(SDK_KEY, SDK_APPID).decrypt(base64.b64encode(bytes(raw)).decode())
    assert raised.value.code in (CryptoErrorCode.DECRYPT_FAILED, CryptoErrorCode.APPID_MISMATCH)


@pytest.mark.parametrize(
    ("encrypted", "code"),
    [
        ("!!!not base64!!!", CryptoErrorCode.INVALID_BASE64),
        ("YWJj", CryptoErrorCode.DECRYPT_FAILED),
        ("", CryptoErrorCode.DECRYPT_FAILED),
        ("A" * 24, CryptoErrorCode.DECRYPT_FAILED),
    ],
)
def test_garbage_is_a_clear_error(encrypted: str, code: CryptoErrorCode) -> None:
    with pytest.raises(WeChatCryptoError) as raised:
        MessageCipher(SDK_KEY, SDK_APPID).decrypt(encrypted)
    assert raised.value.code is code


@pytest.mark.parametrize("key", ["short", "A" * 44, "!" * 43])
def test_invalid_encoding_aes_keys_are_refused(key: str) -> None:
    with pytest.raises(WeChatCryptoError) as raised:
        MessageCipher(key, SDK_APPID).encrypt(b"x")
    assert raised.value.code is CryptoErrorCode.INVALID_AES_KEY


def test_previous_key_opens_messages_while_rotating() -> None:
    encrypted = MessageCipher(SDK_KEY, SDK_APPID).encrypt(b'{"Event":"channels_ec_order_pay"}')
    message, used = decrypt_with_rotation(encrypted, SDK_APPID, [OTHER_KEY, SDK_KEY])
    assert message == b'{"Event":"channels_ec_order_pay"}' and used == 1
    with pytest.raises(WeChatCryptoError) as raised:
        decrypt_with_rotation(encrypted, SDK_APPID, [OTHER_KEY])
    assert raised.value.code is CryptoErrorCode.DECRYPT_FAILED


@given(message=st.binary(max_size=4096), appid=st.from_regex(r"wx[0-9a-f]{16}", fullmatch=True))
def test_round_trip_any_message(message: bytes, appid: str) -> None:
    cipher = MessageCipher(SDK_KEY, appid)
    assert cipher.decrypt(cipher.encrypt(message)) == message


@given(st.text(max_size=300))
def test_arbitrary_input_is_refused_with_a_crypto_error_only(encrypted: str) -> None:
    with pytest.raises(WeChatCryptoError):
        MessageCipher(SDK_KEY, SDK_APPID).decrypt(encrypted)
