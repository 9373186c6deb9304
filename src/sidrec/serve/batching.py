"""Micro-batching: concurrent requests become one model call.

`MicroBatcher.submit(job)` puts a job on a queue and awaits its result. One worker task per batcher takes the oldest
job, then waits until `max_batch` jobs are queued or `max_wait_ms` have passed since that oldest job arrived
(whichever is first), and runs `run_batch(jobs)` in an executor thread (a single thread by default, so the event loop
keeps accepting requests while the model runs, and the model never runs twice at once). While a batch runs, new jobs
queue up; the next batch takes them at once, since their wait has already passed, so under load the batch size grows
by itself towards `max_batch` and with light load a request waits at most `max_wait_ms` extra.

Jobs are validated before they are submitted, so a batch should not fail; if `run_batch` raises anyway, each job of
that batch is run alone, so that one bad job fails only its own request.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, Sequence


class Overloaded(Exception):
    """The queue is full: the caller should answer 503."""


class Closed(Exception):
    """The batcher was stopped before the job ran."""


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 4096, executor: Executor | None = None,
                 name: str = "batcher"):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms} must be >= 0")
        self.run_batch, self.max_batch, self.max_wait = run_batch, int(max_batch), max_wait_ms / 1000.0
        self.max_queue, self.name = int(max_queue), name
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sidrec-{name}")
        self._pending: collections.deque = collections.deque()  # (job, future, enqueued_at)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._inflight: list = []  # (job, future) of the batch being run
        self.stats = {"batches": 0, "jobs": 0, "max_batch_seen": 0, "batch_failures": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"sidrec-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        futures = [fut for _, fut in self._inflight] + [fut for _, fut, _ in self._pending]
        self._pending.clear()
        self._inflight = []
        for fut in futures:
            if not fut.done():
                fut.set_exception(Closed("the service is shutting down"))
        if self._own_executor:
            self.executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ use
    async def submit(self, job: Any) -> Any:
        if self._task is None:
            raise Closed("the batcher is not running")
        if len(self._pending) >= self.max_queue:
            raise Overloaded(f"{len(self._pending)} requests are already queued; try again shortly")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((job, fut, time.monotonic()))
        self._wakeup.set()
        return await fut

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0][2] + self.max_wait
            while len(self._pending) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            batch = [(job, fut) for job, fut, _ in batch if not fut.done()]  # a client that went away
            if not batch:
                continue
            self.stats["batches"] += 1
            self.stats["jobs"] += len(batch)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
            self._inflight = batch
            results = await self._run(loop, [job for job, _ in batch])
            if isinstance(results, BaseException) and len(batch) > 1:
                # the batch failed: run each job alone so that only a bad one fails
                self.stats["batch_failures"] += 1
                for job, fut in batch:
                    self._settle(fut, await self._run(loop, [job]), 0)
                self._inflight = []
                continue
            for i, (job, fut) in enumerate(batch):
                self._settle(fut, results, i)
            self._inflight = []

    @staticmethod
    def _settle(fut: asyncio.Future, results, i: int) -> None:
        if fut.done():
            return
        if isinstance(results, BaseException):
            fut.set_exception(results)
        else:
            fut.set_result(results[i])

    async def _run(self, loop, jobs: list):
        """run_batch's results, or the exception it raised."""
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, jobs)
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} jobs")
            return results
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001  (handed to the caller of submit)
            return e
