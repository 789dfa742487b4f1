"""WeChat message-push signatures and safe-mode encryption (the WXBizMsgCrypt scheme).

signature     = sha1(sorted(token, timestamp, nonce) joined)                 (URL check, plaintext mode)
msg_signature = sha1(sorted(token, timestamp, nonce, Encrypt) joined)        (safe mode)
Encrypt       = base64(AES-256-CBC(key, iv=key[:16],
                  PKCS#7-32(random16 || len(msg) as 4 bytes big-endian || msg || appid)))
key           = base64decode(EncodingAESKey + "=")  (43 characters -> 32 bytes)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# WeChat pads to 32-byte blocks, not AES's 16: PKCS7 here takes the block size in bits.
_PADDING_BITS = 256
_RANDOM_PREFIX = 16
_LENGTH_FIELD = 4


class CryptoErrorCode(StrEnum):
    INVALID_AES_KEY = "invalid_aes_key"
    SIGNATURE_MISMATCH = "signature_mismatch"
    INVALID_BASE64 = "invalid_base64"
    DECRYPT_FAILED = "decrypt_failed"  # wrong key, tampered bytes, bad padding or length
    APPID_MISMATCH = "appid_mismatch"


class WeChatCryptoError(Exception):
    def __init__(self, code: CryptoErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signature_matches(expected: str | None, *parts: str) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(sha1_signature(*parts), expected.lower())


def aes_key_from_encoding_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise WeChatCryptoError(CryptoErrorCode.INVALID_AES_KEY, "EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise WeChatCryptoError(CryptoErrorCode.INVALID_AES_KEY, "EncodingAESKey is not base64") from exc
    if len(key) != 32:
        raise WeChatCryptoError(CryptoErrorCode.INVALID_AES_KEY, "EncodingAESKey does not decode to 32 bytes")
    return key


@dataclass(frozen=True)
class MessageCipher:
    """One shop's EncodingAESKey and appid."""

    encoding_aes_key: str
    appid: str

    def _cipher(self) -> Cipher[modes.CBC]:
        key = aes_key_from_encoding_key(self.encoding_aes_key)
        return Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def encrypt(self, message: bytes, *, random_prefix: bytes | None = None) -> str:
        prefix = random_prefix if random_prefix is not None else os.urandom(_RANDOM_PREFIX)
        if len(prefix) != _RANDOM_PREFIX:
            raise ValueError("the random prefix is 16 bytes")
        plain = prefix + struct.pack(">I", len(message)) + message + self.appid.encode()
        padder = padding.PKCS7(_PADDING_BITS).padder()
        padded = padder.update(plain) + padder.finalize()
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside `encrypted`; raises WeChatCryptoError if it is not for this shop."""
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WeChatCryptoError(CryptoErrorCode.INVALID_BASE64, "Encrypt is not base64") from exc
        if not raw or len(raw) % 16:
            raise WeChatCryptoError(CryptoErrorCode.DECRYPT_FAILED, "ciphertext is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(raw) + decryptor.finalize()
        try:
            unpadder = padding.PKCS7(_PADDING_BITS).unpadder()
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError as exc:
            raise WeChatCryptoError(CryptoErrorCode.DECRYPT_FAILED, "bad padding (wrong key?)") from exc
        if len(plain) < _RANDOM_PREFIX + _LENGTH_FIELD:
            raise WeChatCryptoError(CryptoErrorCode.DECRYPT_FAILED, "plaintext too short")
        (length,) = struct.unpack(">I", plain[_RANDOM_PREFIX : _RANDOM_PREFIX + _LENGTH_FIELD])
        start = _RANDOM_PREFIX + _LENGTH_FIELD
        if start + length > len(plain):
            raise WeChatCryptoError(CryptoErrorCode.DECRYPT_FAILED, "message length exceeds plaintext")
        message, appid = plain[start : start + length], plain[start + length :]
        if not hmac.compare_digest(appid, self.appid.encode()):
            raise WeChatCryptoError(CryptoErrorCode.APPID_MISMATCH, "message is for another appid")
        return message


def decrypt_with_rotation(encrypted: str, appid: str, encoding_aes_keys: Sequence[str]) -> tuple[bytes, int]:
    """Try the current key, then the previous ones (WeChat's advice while rotating keys).

    Returns the message and the index of the key that opened it. An appid mismatch under a key that
    decrypts correctly is final: another key will not make it ours.
    """
    last: WeChatCryptoError | None = None
    for index, key in enumerate(encoding_aes_keys):
        try:
            return MessageCipher(key, appid).decrypt(encrypted), index
        except WeChatCryptoError as exc:
            if exc.code in (CryptoErrorCode.APPID_MISMATCH, CryptoErrorCode.INVALID_BASE64):
                raise
            last = exc
    raise last or WeChatCryptoError(CryptoErrorCode.INVALID_AES_KEY, "no EncodingAESKey configured")
