"""Rate limits: accepted submissions per user and failed sign-ins per account and per address
(shared by every web process, in Redis), and messages per websocket connection (in the consumer).
Settings: SUBMISSIONS_PER_MINUTE, WS_MESSAGES_PER_MINUTE, LOGIN_FAILURES_PER_ACCOUNT,
LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURE_WINDOW_S (videoservice/settings.py)."""
from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid

from django.conf import settings

from videoservice import redis_clients
from videoservice.contract import RATE_LIMITED, UNAVAILABLE, RequestError

# sliding 60 s window: a sorted set of submission times per owner
_SLIDING_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 60000)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + 60000 - tonumber(ARGV[1])
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 61000)
return -1
"""
_client = None
_script = None
log = logging.getLogger(__name__)


def _redis():
    global _client, _script
    if _client is None:
        _client = redis_clients.shared()
        _script = _client.register_script(_SLIDING_WINDOW)
    return _script


def _login_keys(username: str, address: str) -> list:
    account = hashlib.sha256((username or "").strip().lower().encode()).hexdigest()[:32]
    return [f"videoservice:login-failures:account:{account}", f"videoservice:login-failures:address:{address}"]


def login_throttled(username: str, address: str) -> str | None:
    """Why a sign-in of this account from this address is refused before its password is checked
    (None: it may try): LOGIN_FAILURES_PER_ACCOUNT / LOGIN_FAILURES_PER_ADDRESS failures within
    LOGIN_FAILURE_WINDOW_S. Fails open, logged, while Redis is away (nobody could work then anyway)."""
    limits = (settings.LOGIN_FAILURES_PER_ACCOUNT, settings.LOGIN_FAILURES_PER_ADDRESS)
    now_ms = int(time.time() * 1000)
    try:
        _redis()
        with _client.pipeline(transaction=False) as pipe:
            for key in _login_keys(username, address):
                pipe.zremrangebyscore(key, "-inf", now_ms - settings.LOGIN_FAILURE_WINDOW_S * 1000)
                pipe.zcard(key)
            counts = pipe.execute()[1::2]
    except Exception as exc:
        log.warning("login throttle unavailable: %s", exc)
        return None
    for what, count, limit in zip(("this account", "your address"), counts, limits):
        if 0 < limit <= count:
            log.warning("sign-in refused: %d failures for %s (account %r, address %s) in %d s", count, what,
                        username[:150], address, settings.LOGIN_FAILURE_WINDOW_S)
            return (f"too many failed sign-ins for {what}; try again in "
                    f"{math.ceil(settings.LOGIN_FAILURE_WINDOW_S / 60)} minutes")
    return None


def note_login_failure(username: str, address: str) -> None:
    log.info("sign-in failed: account %r, address %s", (username or "")[:150], address)
    now_ms = int(time.time() * 1000)
    try:
        _redis()
        with _client.pipeline(transaction=False) as pipe:
            for key in _login_keys(username, address):
                pipe.zadd(key, {uuid.uuid4().hex: now_ms})
                pipe.pexpire(key, settings.LOGIN_FAILURE_WINDOW_S * 1000 + 1000)
            pipe.execute()
    except Exception as exc:
        log.warning("login throttle unavailable: %s", exc)


def check_submission(owner: str) -> None:
    """Count one submission for `owner`; rate_limited when SUBMISSIONS_PER_MINUTE were accepted in
    the last 60 s. Call it after validation, right before the job is created."""
    limit = settings.SUBMISSIONS_PER_MINUTE
    if limit <= 0:
        return
    try:
        wait_ms = _redis()(keys=[f"videoservice:submissions:{owner}"],
                           args=[int(time.time() * 1000), limit, uuid.uuid4().hex])
    except Exception as exc:
        raise RequestError(UNAVAILABLE, f"rate limiter unavailable: {exc}", status=503, retry_after=5) from None
    if int(wait_ms) >= 0:
        wait_s = max(int(wait_ms) / 1000, 0.1)
        raise RequestError(RATE_LIMITED, f"at most {limit} submissions a minute; try again in {wait_s:.0f} s",
                           status=429, retry_after=math.ceil(wait_s))


class MessageBucket:
    """Token bucket for one websocket connection: WS_MESSAGES_PER_MINUTE messages at once, refilled
    at WS_MESSAGES_PER_MINUTE / 60 a second."""

    def __init__(self, per_minute: int | None = None):
        self.capacity = float(per_minute if per_minute is not None else settings.WS_MESSAGES_PER_MINUTE)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        if self.capacity <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.capacity / 60.0)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
