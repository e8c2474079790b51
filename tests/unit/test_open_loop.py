"""benchmarks/open_loop.py against a small HTTP server on 127.0.0.1: requests go out on schedule while
the server stalls, and their latency counts from when they were due (no coordinated omission)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from open_loop import percentile, run_open_loop


@contextmanager
def server(
    *, stall_at: float | None = None, stall_s: float = 0.0, idle_close_s: float | None = None
) -> Iterator[int]:
    """HTTP/1.1 keep-alive server answering ``ok``; from ``stall_at`` seconds after its first request it
    answers nothing for ``stall_s`` seconds; it closes connections idle for ``idle_close_s``."""
    started = threading.Event()
    port: list[int] = []
    first: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_close_s)
                except (TimeoutError, asyncio.IncompleteReadError):
                    break
                now = asyncio.get_running_loop().time()
                first[:] = first or [now]
                if stall_at is not None:
                    begin = first[0] + stall_at
                    if begin <= now < begin + stall_s:
                        await asyncio.sleep(begin + stall_s - now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    stop: list[asyncio.Event] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        loops.append(asyncio.get_running_loop())
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(srv.sockets[0].getsockname()[1])
        started.set()
        await stop[0].wait()
        srv.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await srv.wait_closed()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield port[0]
    finally:
        loops[0].call_soon_threadsafe(stop[0].set)
        thread.join(10)


def test_a_fast_server_keeps_up_at_the_offered_rate() -> None:
    with server() as port:
        # 16 connections for ~0.2 ms answers: only a stall of the test process itself of over 160 ms
        # could make a request wait for a connection
        r = run_open_loop("127.0.0.1", port, lambda rng: "/", rate=100, seconds=1.0, connections=16)
    assert r.scheduled == r.completed == 100
    assert r.errors == 0 and r.unanswered == 0
    assert r.kept_up
    assert 90 < r.achieved_rps < 110


def test_a_stall_shows_in_every_request_due_during_it() -> None:
    # 0.3 s without answers at 200 req/s: ~60 requests are due meanwhile; a closed loop with 2
    # connections would have sent (and timed) only 2 of them
    with server(stall_at=0.3, stall_s=0.3) as port:
        r = run_open_loop("127.0.0.1", port, lambda rng: "/", rate=200, seconds=1.0, connections=2)
    assert r.completed == 200 and r.errors == 0
    slow = [x for x in r.latencies_ms if x > 100]
    assert len(slow) >= 30, sorted(r.latencies_ms)[-40:]
    assert r.max_queued > 0
    assert not r.kept_up  # requests waited for a connection
    assert r.max_ms >= 200


def test_connections_the_server_closed_when_idle_are_replaced() -> None:
    # 8 connections used in turn at 10 req/s: each idles 0.8 s, the server closes them after 0.3 s
    with server(idle_close_s=0.3) as port:
        r = run_open_loop("127.0.0.1", port, lambda rng: "/", rate=10, seconds=2.0, connections=8)
    assert r.completed == r.scheduled == 20
    assert r.errors == 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN
