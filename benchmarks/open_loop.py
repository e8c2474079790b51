"""An open-loop, constant-rate HTTP/1.1 load generator (the wrk2 model, without coordinated omission).

``bench_api.py`` uses it to measure latency at a fixed offered rate: request *i* is due at
``start + i / rate`` whatever happened to the requests before it. It is sent on one of ``connections``
keep-alive connections as soon as one is free; when all are busy it waits in a queue, and its latency
is still counted from the time it was due (so a server that stalls shows the stall in every request
that should have been sent meanwhile, instead of the closed loop's quiet pause). The run stops by
itself: after the schedule's last request it waits at most ``drain_timeout`` seconds for the rest.

Why not an existing tool: wrk2 (the reference open-loop tool) is not packaged by Debian; Debian's wrk,
hey, siege and ab are closed loops; h2load's ``--rps`` reports no percentiles; autocannon's
``--overallRate`` gives each connection a budget of requests per whole second that it spends back to
back (a burst at the top of every second, not a constant rate), and its omission correction assumes a
1 ms interval. This one is small enough to read: asyncio protocols, no HTTP library, ~50 us of client
CPU a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OpenLoopResult:
    offered_rps: float
    seconds: float  # length of the schedule
    scheduled: int
    completed: int
    errors: int  # non-2xx answers, connection failures, requests left unanswered at the end
    unanswered: int
    achieved_rps: float  # completed / (last completion - start)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    max_queued: int  # most requests due but waiting for a free connection at once
    send_lag_p99_ms: float  # how late the generator itself sent requests that found a free connection
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def kept_up(self) -> bool:
        """The server answered every request, at the offered rate (within 1%), and never had all the
        connections busy with a request waiting for one (a backlog that drained still counts as not
        keeping up: its requests waited)."""
        return self.unanswered == 0 and self.achieved_rps >= 0.99 * self.offered_rps and self.max_queued == 0


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of an ascending list (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time."""

    def __init__(self, on_done: Callable[[_Conn, int | None], None]) -> None:
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        length = None
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
                break
        if length is None:  # the apps measured here always send Content-Length
            self.on_done(self, None)
            self.close()
            return
        if len(self.buf) < end + 4 + length:
            return
        del self.buf[: end + 4 + length]
        self.busy = False
        self.on_done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:
            self.busy = False
            self.on_done(self, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _run(
    host: str,
    port: int,
    path: Callable[[random.Random], str],
    headers: dict[str, str],
    *,
    rate: float,
    seconds: float,
    connections: int,
    drain_timeout: float,
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
    rng = random.Random(1)
    total = max(1, round(rate * seconds))
    latencies: list[float] = []
    lags: list[float] = []
    queued: deque[float] = deque()  # due times of requests waiting for a free connection
    # free connections, used in turn (oldest first) so none sits idle past the server's keep-alive
    # timeout; one the server closed anyway is replaced when it comes up
    idle: deque[_Conn] = deque()
    # completed: answered (any status); bad: answered with a non-2xx status; failed: connection broken
    state = {"completed": 0, "bad": 0, "failed": 0, "max_queued": 0}
    last = [0.0]  # time of the last answer
    all_done = loop.create_future()
    conns: list[_Conn] = []
    pending: set[asyncio.Task[_Conn]] = set()  # replacement connections being opened

    def request() -> bytes:
        return f"GET {path(rng)} HTTP/1.1\r\n{head}\r\n".encode()

    def finished() -> None:
        if state["completed"] + state["failed"] >= total and not all_done.done():
            all_done.set_result(None)

    def on_done(conn: _Conn, status: int | None) -> None:
        now = time.perf_counter()
        if status is None:
            state["failed"] += 1
            finished()
            replace()  # a broken connection is not reused
            return
        latencies.append(now - conn.due)
        state["completed"] += 1
        last[0] = now
        if not 200 <= status < 300:
            state["bad"] += 1
        adopt(conn)
        finished()

    def adopt(conn: _Conn) -> None:
        if queued:
            conn.send(request(), queued.popleft())
        else:
            idle.append(conn)

    def replace() -> None:
        task = loop.create_task(connect())
        task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else adopt(t.result()))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def connect() -> _Conn:
        _, proto = await loop.create_connection(lambda: _Conn(on_done), host, port)
        conns.append(proto)
        return proto

    def free() -> _Conn | None:
        """A free, open connection; each closed one met on the way is replaced in the background."""
        while idle:
            conn = idle.popleft()
            if not conn.closed:
                return conn
            replace()
        return None

    for _ in range(connections):
        idle.append(await connect())

    start = time.perf_counter() + 0.05
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = free()
            if conn is not None:
                lags.append(time.perf_counter() - due)
                conn.send(request(), due)
            else:
                queued.append(due)
                state["max_queued"] = max(state["max_queued"], len(queued))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(all_done), drain_timeout)
    finally:
        for task in list(pending):
            task.cancel()
        for conn in conns:
            conn.close()
    unanswered = total - state["completed"] - state["failed"]
    # every request due and never answered counts with the time it waited until the run stopped
    stopped = time.perf_counter()
    latencies.extend(stopped - due for due in queued)
    latencies.extend(stopped - c.due for c in conns if c.busy)
    lat_ms = sorted(x * 1000 for x in latencies)
    lag_ms = sorted(x * 1000 for x in lags)
    span = (last[0] - start) if state["completed"] else float("nan")
    return OpenLoopResult(
        offered_rps=rate,
        seconds=seconds,
        scheduled=total,
        completed=state["completed"],
        errors=state["bad"] + state["failed"] + unanswered,
        unanswered=unanswered,
        achieved_rps=state["completed"] / span if span and span > 0 else 0.0,
        p50_ms=percentile(lat_ms, 0.50),
        p90_ms=percentile(lat_ms, 0.90),
        p99_ms=percentile(lat_ms, 0.99),
        p999_ms=percentile(lat_ms, 0.999),
        max_ms=lat_ms[-1] if lat_ms else float("nan"),
        max_queued=state["max_queued"],
        send_lag_p99_ms=percentile(lag_ms, 0.99),
        latencies_ms=lat_ms,
    )


def run_open_loop(
    host: str,
    port: int,
    path: Callable[[random.Random], str],
    headers: dict[str, str] | None = None,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    drain_timeout: float = 10.0,
) -> OpenLoopResult:
    """``rate`` requests a second for ``seconds`` on ``connections`` keep-alive connections to
    ``host:port`` (``path(rng)`` gives each request's path); latency counted from when each was due."""
    if rate <= 0 or seconds <= 0 or connections <= 0:
        raise ValueError("rate, seconds and connections must be positive")
    return asyncio.run(
        _run(
            host,
            port,
            path,
            headers or {},
            rate=rate,
            seconds=seconds,
            connections=connections,
            drain_timeout=drain_timeout,
        )
    )
