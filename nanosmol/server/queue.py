"""The generation queue: one model, one worker thread, requests served first come, first served.

Generation runs off the event loop, so the server keeps answering while a long answer is
generated. Each job streams its events back to the loop; cancelling a job (its client left)
frees its place in the queue at once, or stops its generation within one decoding step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

log = logging.getLogger("nanosmol.server")

# work(emit, should_stop) -> result: runs on the worker thread, emit(item) streams to the client.
Work = Callable[[Callable[[Any], None], Callable[[], bool]], Any]


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


class Job:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.started = False
        self.result: Any = None
        self.error: BaseException | None = None

    def emit(self, item: Any) -> None:  # from the worker thread
        self._loop.call_soon_threadsafe(self._events.put_nowait, ("item", item))

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:  # from the worker thread
        self.result, self.error = result, error
        self._loop.call_soon_threadsafe(self._events.put_nowait, ("end", None))

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The emitted items, grouped as they piled up while the loop was busy; ends with the job."""
        while True:
            batch, ended = [], False
            kind, item = await self._events.get()
            while True:
                if kind == "end":
                    ended = True
                    break
                batch.append(item)
                if self._events.empty():
                    break
                kind, item = self._events.get_nowait()
            if batch:
                yield batch
            if ended:
                return


class GenerationQueue:
    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanosmol-generate")
        self._lock = threading.Lock()
        self._admitted: set[Job] = set()  # waiting or running, not cancelled
        self.running = 0

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._admitted) - self.running

    def submit(self, work: Work) -> Job:
        """Queue work behind the jobs already admitted; QueueFull when max_waiting already wait."""
        job = Job(asyncio.get_running_loop())
        with self._lock:
            if len(self._admitted) - self.running >= self.max_waiting:
                raise QueueFull
            self._admitted.add(job)
        self._executor.submit(self._run, job, work)
        return job

    def cancel(self, job: Job) -> None:
        """The client is gone: a waiting job leaves the queue, a running one stops after this step."""
        job.cancelled.set()
        with self._lock:
            if not job.started:
                self._admitted.discard(job)

    def _run(self, job: Job, work: Work) -> None:
        with self._lock:
            if job.cancelled.is_set():
                return
            job.started = True
            self.running += 1
        try:
            job.finish(result=work(job.emit, job.cancelled.is_set))
        except Exception as e:  # reported to the client as a server error; the worker goes on
            log.exception("generation failed")
            job.finish(error=e)
        finally:
            with self._lock:
                self.running -= 1
                self._admitted.discard(job)

    def close(self) -> None:
        with self._lock:
            jobs = list(self._admitted)
        for job in jobs:
            job.cancelled.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
