"""Concurrent nameko RPC callers without the gateway.

``callers`` threads spread over ``processes`` processes (spawned, one per core
by default, so that the callers are not held by one GIL); each thread has its
own ``ClusterRpcProxy`` (the standalone proxy is single-threaded), makes one
warm-up call, waits for the others, then makes its share of the calls one
after another. Calls/s from the first call to the last answer; latency per call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass, field

from benchmarks.core import percentile

TIMEOUT = 30.0


@dataclass
class RpcResult:
    started: float = float("inf")
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # used by the caller processes while calling

    @property
    def client_cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return len(self.latencies) / max(self.finished - self.started, 1e-9)

    def percentile_ms(self, q: float) -> float | None:
        value = percentile(sorted(self.latencies), q)
        return None if value is None else value * 1000


def _caller(amqp_uri, service, method, args_pool, calls, ready, go, out, errors) -> None:
    from nameko.standalone.rpc import ClusterRpcProxy

    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=TIMEOUT) as rpc:
            call = getattr(getattr(rpc, service), method)
            call(random.choice(args_pool))  # declares the reply queue
            ready.wait()
            go.wait()
            for _ in range(calls):
                began = time.monotonic()
                call(random.choice(args_pool))
                out.append((began, time.monotonic()))
    except Exception as exc:
        errors.append(repr(exc))
        ready.abort()  # the others stop waiting for this one


def _process(amqp_uri, service, method, args_pool, calls_per_thread, ready, go, pipe) -> None:
    warnings.filterwarnings("ignore")  # eventlet's deprecation notice on import
    thread_ready = threading.Barrier(len(calls_per_thread) + 1)
    outs: list[list[tuple[float, float]]] = [[] for _ in calls_per_thread]
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_caller,
            args=(amqp_uri, service, method, args_pool, calls, thread_ready, go, outs[i], errors),
            daemon=True,
        )
        for i, calls in enumerate(calls_per_thread)
    ]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        thread_ready.wait(timeout=60)
    ready.set()
    go.wait()
    cpu_before = time.process_time()
    for thread in threads:
        thread.join()
    pipe.send(([pair for out in outs for pair in out], errors, time.process_time() - cpu_before))


def call_concurrently(
    amqp_uri: str,
    service: str,
    method: str,
    args_pool: list,
    total: int,
    callers: int,
    processes: int | None = None,
    on_start=None,
) -> RpcResult:
    """``total`` calls of ``service.method(arg)`` (``arg`` drawn from ``args_pool``) by ``callers`` callers.

    ``on_start()`` is called just before the calls begin (to start CPU
    accounting of the servers; the callers report their own CPU).
    """
    processes = max(1, min(processes or len(os.sched_getaffinity(0)), callers))
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    shares = [total // callers + (1 if i < total % callers else 0) for i in range(callers)]
    groups = [shares[p::processes] for p in range(processes)]
    workers, pipes, readies = [], [], []
    for calls_per_thread in groups:
        parent, child = spawn.Pipe()
        ready = spawn.Event()
        worker = spawn.Process(
            target=_process,
            args=(amqp_uri, service, method, args_pool, calls_per_thread, ready, go, child),
            daemon=True,
        )
        worker.start()
        workers.append(worker)
        pipes.append(parent)
        readies.append(ready)
    result = RpcResult()
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("RPC callers did not start within 120 s")
        if on_start is not None:
            on_start()
        go.set()
        for pipe in pipes:
            pairs, errors, cpu_seconds = pipe.recv()
            result.errors += errors
            result.cpu_seconds += cpu_seconds
            for began, ended in pairs:
                result.started = min(result.started, began)
                result.finished = max(result.finished, ended)
                result.latencies.append(ended - began)
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    return result
