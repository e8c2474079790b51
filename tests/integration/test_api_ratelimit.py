"""Per-key rate limits: the Redis Lua token bucket (shared by every API process) and the in-process one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from partner_api.ratelimit import InProcessLimiter, RedisLimiter
from tests.integration.api_fixtures import build_api, make_settings

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")


def test_in_process_bucket_refills_at_its_rate() -> None:
    limiter = InProcessLimiter()
    decisions = [limiter.take("k", rate=2.0, burst=3, now=100.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].retry_after_s == pytest.approx(0.5)
    assert decisions[3].retry_after_header == "1"
    assert limiter.take("k", rate=2.0, burst=3, now=100.49).allowed is False
    assert limiter.take("k", rate=2.0, burst=3, now=100.5).allowed is True
    assert limiter.take("other", rate=2.0, burst=3, now=100.5).allowed is True  # per key


@pytest.mark.redis
def test_redis_bucket_is_atomic_under_concurrency() -> None:
    _redis_or_skip()

    from concurrent.futures import ThreadPoolExecutor

    limiter = RedisLimiter(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    with ThreadPoolExecutor(max_workers=32) as pool:
        decisions = list(pool.map(lambda _: limiter.hit("key", rate=0.001, burst=25), range(200)))
    allowed = [d.allowed for d in decisions]
    assert sum(allowed) == 25  # never more than the bucket, whatever the interleaving


@pytest.mark.redis
def test_redis_limiter_loads_its_script_again_after_a_flush() -> None:
    """A restarted or flushed Redis has forgotten the script: the next call loads it and runs it."""
    _redis_or_skip()
    import redis

    limiter = RedisLimiter(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        assert limiter.hit("key", rate=0.001, burst=2).allowed
        redis.Redis.from_url(REDIS_URL).script_flush()
        assert [limiter.hit("key", rate=0.001, burst=2).allowed for _ in range(2)] == [True, False]
    finally:
        limiter.close()


@pytest.mark.redis
def test_redis_limiter_replaces_a_closed_connection() -> None:
    """An idle connection the server closed (a restart, an idle timeout) is dropped and the call made
    again on a new one: the bucket in Redis is still the one used."""
    _redis_or_skip()
    import redis

    limiter = RedisLimiter(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        assert limiter.hit("key", rate=0.001, burst=3).allowed  # Redis bucket: 2 left
        (conn,) = limiter._idle
        conn.send_command("CLIENT", "ID")
        redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=conn.read_response())
        decisions = [limiter.hit("key", rate=0.001, burst=3).allowed for _ in range(3)]
        assert decisions == [True, True, False]  # 2 left, then empty: no call went to the fallback
        assert conn not in limiter._idle and len(limiter._idle) == 1
    finally:
        limiter.close()


def test_redis_limiter_falls_back_in_process_when_redis_is_down() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", prefix=f"test:{uuid.uuid4().hex}:")
    try:
        decisions = [limiter.hit("key", rate=0.001, burst=2).allowed for _ in range(3)]
        assert decisions == [True, True, False]  # the process's own bucket
        assert not limiter._idle
    finally:
        limiter.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limited_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    redis_url = None
    if request.param == "redis":
        _redis_or_skip()
        redis_url = REDIS_URL
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'live.db'}",
        f"sqlite:///{tmp_path / 'sandbox.db'}",
        redis_url=redis_url,
        api_rate_per_s=0.01,
        api_burst=5,
    )
    yield from build_api(settings)


def test_a_burst_gets_429_with_retry_after(limited_api: object) -> None:
    from tests.integration.api_fixtures import Api

    assert isinstance(limited_api, Api)
    api = limited_api
    key = api.partner()
    other = api.partner()
    statuses = [api.get("/v1/transactions", key).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    refused = api.get("/v1/transactions", key)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["type"].endswith("rate-limited")
    assert api.get("/v1/transactions", other).status_code == 200  # buckets are per key
    # the status read takes its token in the worker-thread call that reads the store
    status = api.get("/v1/transactions/tx-none", key)
    assert status.status_code == 429 and status.json()["type"].endswith("rate-limited")
    assert api.get("/v1/transactions/tx-none", other).status_code == 404
    metrics = api.client.get("/metrics").text
    assert "recon_api_rate_limited_total" in metrics


@pytest.mark.redis
def test_processes_share_the_redis_bucket(tmp_path: Path) -> None:
    """Two API instances (as two pods would be) draw from one bucket per key."""
    _redis_or_skip()
    from tests.integration.api_fixtures import Api

    live, sandbox = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'sandbox.db'}"
    settings = make_settings(tmp_path, live, sandbox, redis_url=REDIS_URL, api_rate_per_s=0.01, api_burst=6)
    first = build_api(settings)
    second = build_api(settings)
    a: Api = next(first)
    b: Api = next(second)
    try:
        key = a.partner()
        statuses = [(a if i % 2 else b).get("/v1/transactions", key).status_code for i in range(10)]
        assert statuses.count(200) == 6 and statuses.count(429) == 4
    finally:
        for gen in (first, second):
            with pytest.raises(StopIteration):
                next(gen)
