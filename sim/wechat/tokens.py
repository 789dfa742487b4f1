"""access_token issuing and checking, with WeChat's rules (pure: time comes from an injected clock).

- `/cgi-bin/token` mints a new token each call; the previous one keeps working for an overlap
  (5 minutes) and then answers 40001.
- `/cgi-bin/stable_token` is independent of `/cgi-bin/token`. Normal mode returns the same token until
  it has 5 minutes left, then a new one (the old one works until its own expiry). `force_refresh`
  mints a new token at once and invalidates the previous stable token; at most 20 a day (45009), and
  within 30 s of the last forced refresh it does not refresh again.
- An expired token answers 42001; an unknown or superseded one 40001; none at all 41001.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

from shared.wechat.api import ErrCode
from sim.wechat.errors import WeChatApiError

Clock = Callable[[], float]

STABLE_REFRESH_AHEAD_S = 300  # stable_token: "the platform renews the token 5 minutes early"
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_MIN_INTERVAL_S = 30
_BEIJING = timezone(timedelta(hours=8))  # WeChat's daily quotas reset at midnight Beijing time


class TokenKind(StrEnum):
    BASIC = "token"  # /cgi-bin/token
    STABLE = "stable_token"  # /cgi-bin/stable_token


@dataclass
class AccessToken:
    value: str
    appid: str
    kind: TokenKind
    issued_at: float
    expires_at: float
    invalid_after: float | None = None  # set when superseded: answers 40001 from then on

    def expires_in(self, now: float) -> int:
        return max(0, math.ceil(self.expires_at - now))


def _new_token_value() -> str:
    return secrets.token_urlsafe(96)  # 128 characters, like WeChat's (store at least 512)


class TokenStore:
    def __init__(self, *, clock: Clock, ttl_s: int = 7200, overlap_s: int = 300) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._overlap_s = overlap_s
        self._tokens: dict[str, AccessToken] = {}
        self._current: dict[tuple[str, TokenKind], AccessToken] = {}
        self._forced: dict[str, list[float]] = {}  # appid -> times of forced stable refreshes

    def _mint(self, appid: str, kind: TokenKind) -> AccessToken:
        now = self._clock()
        token = AccessToken(_new_token_value(), appid, kind, issued_at=now, expires_at=now + self._ttl_s)
        self._tokens[token.value] = token
        self._current[(appid, kind)] = token
        return token

    def issue_basic(self, appid: str) -> AccessToken:
        """`/cgi-bin/token`: a new token; the previous one stops working after the overlap."""
        now = self._clock()
        previous = self._current.get((appid, TokenKind.BASIC))
        if previous is not None and previous.invalid_after is None:
            previous.invalid_after = min(previous.expires_at, now + self._overlap_s)
        return self._mint(appid, TokenKind.BASIC)

    def issue_stable(self, appid: str, *, force_refresh: bool) -> AccessToken:
        """`/cgi-bin/stable_token`. Raises WeChatApiError(45009) past the daily forced-refresh quota."""
        now = self._clock()
        current = self._current.get((appid, TokenKind.STABLE))
        usable = current is not None and current.invalid_after is None and now < current.expires_at
        if force_refresh:
            forced = self._forced.setdefault(appid, [])
            if usable and current is not None and forced and now - forced[-1] < FORCE_REFRESH_MIN_INTERVAL_S:
                return current  # "calls closer than 30 s apart do not refresh"
            today = datetime.fromtimestamp(now, UTC).astimezone(_BEIJING).date()
            forced[:] = [
                t for t in forced if datetime.fromtimestamp(t, UTC).astimezone(_BEIJING).date() == today
            ]
            if len(forced) >= FORCE_REFRESH_PER_DAY:
                raise WeChatApiError(ErrCode.DAILY_QUOTA, "force_refresh is limited to 20 a day")
            forced.append(now)
            if current is not None and current.invalid_after is None:
                current.invalid_after = now
            return self._mint(appid, TokenKind.STABLE)
        if usable and current is not None and current.expires_at - now > STABLE_REFRESH_AHEAD_S:
            return current
        return self._mint(appid, TokenKind.STABLE)  # the old one still works until its own expiry

    def resolve(self, value: str | None) -> AccessToken:
        """The token behind `value`, or WeChatApiError 41001 / 40001 / 42001."""
        if not value:
            raise WeChatApiError(ErrCode.TOKEN_MISSING)
        token = self._tokens.get(value)
        now = self._clock()
        if token is None:
            raise WeChatApiError(ErrCode.INVALID_CREDENTIAL)
        if token.invalid_after is not None and now >= token.invalid_after:
            raise WeChatApiError(ErrCode.INVALID_CREDENTIAL, "access_token is not latest")
        if now >= token.expires_at:
            raise WeChatApiError(ErrCode.TOKEN_EXPIRED)
        return token

    def expire_all(self, appid: str) -> int:
        """Scripted fault: every token of `appid` expires now (next calls answer 42001)."""
        now = self._clock()
        count = 0
        for token in self._tokens.values():
            if token.appid == appid and token.expires_at > now:
                token.expires_at = now
                count += 1
        return count

    def tokens_of(self, appid: str) -> list[AccessToken]:
        return [token for token in self._tokens.values() if token.appid == appid]
