"""Dynamic batching: requests that arrive together are decoded in one search.

Jobs wait in a queue. The decoding loop takes the oldest job and waits until `max_batch_size` jobs with its batch
key are queued, or until the oldest has waited `max_wait_s`; then it decodes them in one call on its own thread
(one search at a time: the model is busy anyway), while new jobs queue for the next batch. A job dropped before
its batch starts (the client left, the deadline passed) is taken out of the queue; once decoding has started its
result is simply not used.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from .metrics import Metrics


class QueueFull(Exception):
    """More jobs than the queue holds: answer 503, Retry-After `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One history to decode; `future` gets its recommendations (or its exception)."""

    payload: Any
    key: Hashable
    future: asyncio.Future
    queued_at: float
    state: str = "queued"  # queued -> running -> finished, or queued -> dropped


@dataclass
class Batcher:
    """Collects jobs into batches of one key and runs `decode(key, payloads) -> results` on a worker thread."""

    decode: Callable[[Hashable, list[Any]], Sequence[Any]]
    max_batch_size: int
    max_wait_s: float
    max_queue: int
    metrics: Metrics | None = None
    _queue: deque = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "bearrec-decode"))
    _last_batch_s: float = 0.0

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether the decoding loop is taking batches."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bearrec-batcher")

    async def stop(self) -> None:
        """Stop taking batches (the one decoding finishes first); queued jobs fail with QueueFull."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(QueueFull(1))
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    def submit(self, payloads: Sequence[Any], key: Hashable) -> list[Job]:
        """Queue one job per payload, all or none: QueueFull when they do not fit."""
        if len(self._queue) + len(payloads) > self.max_queue:
            if self.metrics:
                self.metrics.rejected.inc(len(payloads))
            raise QueueFull(self.retry_after())
        loop = asyncio.get_running_loop()
        jobs = [Job(p, key, loop.create_future(), loop.time()) for p in payloads]
        self._queue.extend(jobs)
        self._gauge()
        self._wake.set()
        return jobs

    def drop(self, job: Job, reason: str) -> bool:
        """Take a job out of the queue if its batch has not started; True when it was."""
        if job.state != "queued":
            return False
        self._queue.remove(job)
        job.state = "dropped"
        if not job.future.done():
            job.future.cancel()
        if self.metrics:
            self.metrics.dropped.labels(reason).inc()
        self._gauge()
        self._wake.set()
        return True

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: batches ahead times the last batch's time, at least 1."""
        batches = math.ceil(len(self._queue) / self.max_batch_size)
        return max(1, math.ceil(batches * self._last_batch_s))

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            head = self._queue[0]
            while self._count(head.key) < self.max_batch_size and head.state == "queued":
                remaining = head.queued_at + self.max_wait_s - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if head.state != "queued":  # dropped while waiting: start over with the new oldest job
                continue
            batch = self._take(head.key)
            await self._decode(loop, head.key, batch)

    def _count(self, key: Hashable) -> int:
        return sum(1 for j in self._queue if j.key == key)

    def _take(self, key: Hashable) -> list[Job]:
        """Up to max_batch_size queued jobs of `key`, oldest first; the others stay in order."""
        batch, rest = [], deque()
        for job in self._queue:
            (batch if job.key == key and len(batch) < self.max_batch_size else rest).append(job)
        self._queue = rest
        for job in batch:
            job.state = "running"
        self._gauge()
        return batch

    async def _decode(self, loop: asyncio.AbstractEventLoop, key: Hashable, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.decode, key, [j.payload for j in batch])
        except Exception as e:  # a bug or a model failure fails this batch's requests, not the server
            results = [e] * len(batch)
        self._last_batch_s = time.perf_counter() - start
        if self.metrics:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.decode_seconds.observe(self._last_batch_s)
        for job, result in zip(batch, results):
            job.state = "finished"
            if job.future.done():  # its client left or its deadline passed meanwhile
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._queue))
