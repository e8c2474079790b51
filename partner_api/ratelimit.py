"""Per-key token buckets: on Redis (one atomic Lua script) or in-process when no Redis is configured.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request takes
one. An empty bucket answers ``429`` with ``Retry-After`` (whole seconds until a token is back).

The Redis script reads the clock with ``TIME`` on the server, so every API process shares one clock
and one bucket per key; it is atomic (Redis runs a script alone). Should Redis fail, the limiter falls
back to the in-process bucket for that request and logs it (the API stays up, each process limits
on its own until Redis is back).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from reconciliation_pipeline.settings import Settings

log = logging.getLogger("partner_api.ratelimit")
#: Idle Redis connections a :class:`RedisLimiter` keeps for its calls.
IDLE_CONNECTIONS = 64

#: KEYS[1] bucket; ARGV rate (tokens/s), burst, cost. Returns {allowed, tokens, retry_after_s}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(retry)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: float
    retry_after_s: float

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter(Protocol):
    backend: str

    def hit(self, key: str, *, rate: float, burst: int) -> Decision: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class InProcessLimiter:
    """Token buckets in this process's memory (the embedded default)."""

    backend = "memory"

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, *, rate: float, burst: int, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, ts = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - ts) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return Decision(True, tokens - 1.0, 0.0)
            self._buckets[key] = (tokens, now)
            return Decision(False, tokens, (1.0 - tokens) / rate)

    def hit(self, key: str, *, rate: float, burst: int) -> Decision:
        return self.take(key, rate=rate, burst=burst)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisLimiter:
    """Token buckets on Redis, shared by every API process."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "recon:ratelimit:") -> None:
        import redis

        self.url = url
        self.prefix = prefix
        # The synchronous client, called from the request's worker thread: redis-py's asyncio client
        # cost ~1.6 ms of CPU a request in bench_api.py, the synchronous one a fraction of that.
        pool: Any = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=2.0, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._client: Any = redis.Redis(connection_pool=pool)
        self._script: Any = self._client.register_script(TOKEN_BUCKET_LUA)
        self._connect: Any = lambda: pool.connection_class(**pool.connection_kwargs)
        #: Idle connections of :meth:`hit` (taken and given back by the request's thread; ``deque`` pop
        #: and append are atomic). See :meth:`_evalsha` for why not the client's pool.
        self._idle: deque[Any] = deque()
        self._fallback = InProcessLimiter()

    def hit(self, key: str, *, rate: float, burst: int) -> Decision:
        try:
            allowed, tokens, retry = self._evalsha(self.prefix + key, rate, burst)
        except Exception as exc:  # Redis down or slow: limit in-process rather than fail the request
            log.warning("rate limiter: Redis unavailable (%s); limiting in-process", exc)
            return self._fallback.take(key, rate=rate, burst=burst)
        return Decision(bool(int(allowed)), float(tokens), float(retry))

    def _evalsha(self, bucket: str, rate: float, burst: int) -> Any:
        """``EVALSHA`` of the token-bucket script on a connection of this limiter's own.

        The script is the same atomic one; only the client path is shorter than ``Script.__call__``
        on the client's pool (its lock, its ``poll`` of an idle connection for unread data, the retry
        and deprecation wrappers): 35-43 against 95 us of CPU a call here. That check is not needed
        because a connection goes back to ``_idle`` only after its reply was read in full; one that
        failed in any way is closed and dropped. An idle connection the server has closed meanwhile
        (a Redis restart, its idle timeout) fails with ``ConnectionError`` before the script ran, so
        the call is made once more on a new connection, as redis-py's own retry would. At most
        :data:`IDLE_CONNECTIONS` are kept; a burst opens at most one a concurrent caller (the API's
        worker threads).
        """
        from redis.exceptions import ConnectionError as RedisConnectionError

        try:
            conn = self._idle.pop()
        except IndexError:
            return self._call(self._connect(), bucket, rate, burst)
        try:
            return self._call(conn, bucket, rate, burst)
        except RedisConnectionError:
            return self._call(self._connect(), bucket, rate, burst)

    def _call(self, conn: Any, bucket: str, rate: float, burst: int) -> Any:
        from redis.exceptions import NoScriptError

        try:
            try:
                conn.send_command("EVALSHA", self._script.sha, 1, bucket, rate, burst, 1)
                reply = conn.read_response()
            except NoScriptError:  # a restarted or flushed Redis: load the script, then run it
                conn.send_command("SCRIPT", "LOAD", TOKEN_BUCKET_LUA)
                conn.read_response()
                conn.send_command("EVALSHA", self._script.sha, 1, bucket, rate, burst, 1)
                reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        if len(self._idle) < IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            conn.disconnect()
        return reply

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()
        self._client.close()

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:
            return False


def make_limiter(settings: Settings) -> RateLimiter:
    """Redis when ``RECON_REDIS_URL`` is set, else in-process."""
    if settings.redis_url:
        return RedisLimiter(settings.redis_url)
    return InProcessLimiter()
