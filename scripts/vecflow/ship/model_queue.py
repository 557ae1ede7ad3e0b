"""The server's one model thread and its bounded queue (``vecflow serve --model-threads``, ``--max-queue``).

Every model call of every endpoint (/encode, /predict-next, /chat, /summarize) runs on ONE thread, one call at a
time, with ``--model-threads`` torch intra-op threads; the event loop (HTTP, JSON, validation, /health, /info)
never runs a model and never waits for one. At most ``--max-queue`` requests wait for that thread or are on it;
one more gets **503** with a ``Retry-After`` header at once instead of an ever longer wait (a server that queues
without bound answers nothing in time once it is overloaded, its liveness probe included).

Requests of one kind that arrive while the thread is busy are answered together by the next model call
(``MicroBatcher``): the batch function gets every queued item and returns one answer per item, each the
answer that item gets alone (the server's batch functions group items whose answers a shared call cannot
change; tests/test_serve.py checks it bit for bit). Nothing waits for a batch to fill. A batcher with a
``key`` takes only the queued items of the first one's key: /summarize shares a call between identical inputs
only, so each distinct dialogue is its own call and its answer leaves as soon as it is generated (not after
every other queued dialogue's).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import os
import time
from typing import Any, Callable

from fastapi import HTTPException

DEFAULT_MAX_QUEUE = 64  # requests waiting for (or on) the model thread; one more gets 503
MAX_BATCH = 64  # queued requests one model call answers at most
MAX_RETRY_AFTER_S = 60


def default_model_threads() -> int:
    """Torch threads for the model thread: one core is left to the event loop (HTTP, JSON, validation)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores - 1)


class Overloaded(HTTPException):
    """503: the model queue is full; ``Retry-After`` says when a retry has a fair chance (whole seconds)."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(status_code=503, headers={"Retry-After": str(retry_after_s)},
                         detail=f"the server is busy ({queued} requests queued for the model, the most "
                                f"--max-queue allows); retry after {retry_after_s} s")


class ModelThread:
    """One thread that runs every model call, one at a time, with ``threads`` torch intra-op threads (torch's
    setting is per calling thread).

    Concurrent requests queue here instead of running torch in up to 40 threadpool threads at once, each with its
    own intra-op threads, on the same cores as the event loop: that way each request costs more CPU, and a model
    thread with several torch threads next to a busy event loop is slower still (its threads wait for each other
    at every operator). The figures are in BENCHMARKS.md (figures from the code's design notes)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecflow-model",
                                                               initializer=self._setup)

    def _setup(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def submit(self, fn, *args) -> asyncio.Future:
        """``fn(*args)`` queued for the model thread now; an asyncio future of its result (call on the loop)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelQueue:
    """The bounded queue in front of the model thread: ``admit()`` counts a request in (or raises ``Overloaded``)
    and out when it is answered; ``run`` and the ``MicroBatcher``s send its model calls to the one thread.

    Runs on the event loop only (no locks: admission and release happen between awaits)."""

    def __init__(self, threads: int, max_queue: int = DEFAULT_MAX_QUEUE):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.thread = ModelThread(threads)
        self.max_queue = max_queue
        self.queued = 0  # admitted requests not answered yet (waiting for the thread, or on it)
        self.refused = 0  # 503s so far
        self._per_request_s: collections.deque = collections.deque(maxlen=32)  # recent model seconds per request

    def admit(self) -> "_Admission":
        """``async with queue.admit():`` around a request's model work; a full queue raises ``Overloaded`` now."""
        if self.queued >= self.max_queue:
            self.refused += 1
            raise Overloaded(self.queued, self.retry_after_s())
        return _Admission(self)

    def retry_after_s(self) -> int:
        """Seconds until the requests queued now are answered, at the median model time per request of the
        recent calls (a median: the first call of a model also loads it), 1 to 60."""
        recent = sorted(self._per_request_s)
        estimate = recent[len(recent) // 2] * self.queued if recent else 1.0
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(estimate))))

    def timed(self, fn: Callable, items: bool = False) -> Callable:
        """``fn`` as run on the model thread, its seconds per request recorded (``items``: its first argument is
        a batch of requests)."""

        def call(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                count = max(1, len(args[0])) if items and args else 1
                self._per_request_s.append((time.perf_counter() - start) / count)

        return call

    async def run(self, fn, *args):
        """``fn(*args)`` on the model thread for one admitted request (or a 503 when the queue is full)."""
        async with self.admit():
            return await self.thread.submit(self.timed(fn), *args)

    def batcher(self, fn: Callable[[list], list], cap: int = MAX_BATCH,
                key: Callable[[Any], Any] | None = None) -> "MicroBatcher":
        return MicroBatcher(self, fn, cap, key)

    def close(self) -> None:
        self.thread.close()


class _Admission:
    def __init__(self, queue: ModelQueue):
        self.queue = queue

    async def __aenter__(self):
        self.queue.queued += 1
        return self

    async def __aexit__(self, *exc) -> None:
        self.queue.queued -= 1


class MicroBatcher:
    """Requests of one kind answered together: ``fn(items)`` runs on the model thread and returns one answer per
    item (a value, or an exception for that item alone).

    At most one batch is on the model thread at a time; the requests that arrive meanwhile wait here and go
    together, up to ``cap`` of them, as soon as it is done. Nothing waits for a batch to fill: a request that
    finds no batch running goes at once, alone. With 8 closed-loop clients this turns 8 model calls (each a
    Python dispatch of some 30 torch operators) into one. An error of the call itself (a model that fails to
    load, a bug) is every request's answer, as it would have been for each alone. Every request counts in the
    model queue while it waits here. Runs on the event loop only.

    With ``key``, a batch is the oldest waiting item and every other waiting item with its key (in arrival
    order; the others keep their places): where only equal items can share a call, one call per key answers
    each key's requests as soon as that key is done, instead of all of them after the last key's call."""

    def __init__(self, queue: ModelQueue, fn, cap: int = MAX_BATCH, key: Callable[[Any], Any] | None = None):
        self.queue, self.fn, self.cap, self.key = queue, queue.timed(fn, items=True), cap, key
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = False
        self.batches = 0  # model calls so far (the tests read it)

    async def submit(self, item):
        async with self.queue.admit():
            future = asyncio.get_running_loop().create_future()
            self.pending.append((item, future))
            if not self.running:
                self._start()
            answer = await future
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _take(self) -> list[tuple[Any, asyncio.Future]]:
        """The next batch out of ``pending``: up to ``cap`` items (with a ``key``: of the oldest item's key)."""
        if self.key is None:
            batch, self.pending = self.pending[:self.cap], self.pending[self.cap:]
            return batch
        first = self.key(self.pending[0][0])
        batch, rest = [], []
        for entry in self.pending:
            (batch if len(batch) < self.cap and self.key(entry[0]) == first else rest).append(entry)
        self.pending = rest
        return batch

    def _start(self) -> None:
        batch = [(item, future) for item, future in self._take() if not future.done()]  # a cancelled request: skipped
        if not batch:
            if self.pending:
                self._start()
            return
        self.running = True
        self.batches += 1
        try:
            call = self.queue.thread.submit(self.fn, [item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - e.g. the model thread shut down: each request's error
            call = asyncio.get_running_loop().create_future()
            call.set_exception(exc)
        call.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(self, batch, call: asyncio.Future) -> None:
        self.running = False
        try:
            if call.cancelled():
                answers = [None] * len(batch)
            elif call.exception() is not None:
                answers = [call.exception()] * len(batch)
            else:
                answers = call.result()
                if len(answers) != len(batch):
                    answers = [RuntimeError(f"{len(answers)} answers for {len(batch)} requests")] * len(batch)
            for (_, future), answer in zip(batch, answers):
                if future.done():
                    continue
                if call.cancelled():
                    future.cancel()
                else:
                    future.set_result(answer)  # an exception as answer: submit raises it for that request
        finally:
            if self.pending:
                self._start()


def grouped(items: list, key: Callable[[Any], Any], call: Callable[[list], list]) -> list:
    """``call`` once per group of items with the same ``key`` (in order of first appearance), one answer per item.

    A group whose call raises is called again item by item, so that every item gets exactly what it gets alone
    (its own 422, or its value): one bad item never fails the others."""
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    answers: list = [None] * len(items)
    for members in groups.values():
        try:
            outputs = call([items[i] for i in members])
        except Exception as exc:  # noqa: BLE001 - each item alone: its own answer or its own exception
            outputs = [exc] if len(members) == 1 else [_alone(call, items[i]) for i in members]
        for i, output in zip(members, outputs):
            answers[i] = output
    return answers


def _alone(call, item):
    try:
        return call([item])[0]
    except Exception as exc:  # noqa: BLE001 - this item's answer (the batcher raises it for its request)
        return exc
