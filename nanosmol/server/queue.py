"""The generation queue: one model, one worker, requests served first come, first served.

Generation runs off the event loop, so the server keeps answering while a long answer is
generated. Each job streams its events back to the loop; cancelling a job (its client left)
frees its place in the queue at once, or stops its generation within one decoding step.
The worker is a thread of its own (start_worker_thread), or whichever thread calls
work_forever(). It decodes as fast as `nanosmol bench` only if it runs the process's one team
of OpenMP threads (see nanosmol.api.on_a_passing_thread): those spin between parallel regions,
so on a machine whose cores are busy with other work they lose time to it, as bench's do.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable

log = logging.getLogger("nanosmol.server")

# work(emit, should_stop) -> result: runs on the worker thread, emit(item) streams to the client.
Work = Callable[[Callable[[Any], None], Callable[[], bool]], Any]


# The worker hands items to the event loop at most this often (the first one at once). Each
# hand-off wakes the loop and then the client, and on two cores each wake-up preempts a
# decoding thread, stalling the other at its next barrier: measured with the default model
# (tools/bench_server.py), a hand-off every 40 ms decoded at 0.85-0.88x bench, every 100 ms
# at 0.93-1.02x. Ten updates a second still read as a stream.
HAND_OFF_SECONDS = 0.1


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
        self._pending: list[Any] = []  # emitted, not yet handed to the loop
        self._handed_off = 0.0  # when they last were

    def emit(self, item: Any) -> None:  # from the worker thread
        self._pending.append(item)
        if time.monotonic() - self._handed_off >= HAND_OFF_SECONDS:
            self._hand_off()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:  # from the worker thread
        self._hand_off()
        self.result, self.error = result, error
        self._to_loop(("end", None))

    def _hand_off(self) -> None:
        items, self._pending, self._handed_off = self._pending, [], time.monotonic()
        if items:
            self._to_loop(("items", items))

    def _to_loop(self, event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop has closed (the server stopped): nobody is listening
            self.cancelled.set()

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The emitted items, grouped as they piled up while the loop was busy; ends with the job."""
        while True:
            batch, ended = [], False
            kind, items = await self._events.get()
            while True:
                if kind == "end":
                    ended = True
                    break
                batch.extend(items)
                if self._events.empty():
                    break
                kind, items = self._events.get_nowait()
            if batch:
                yield batch
            if ended:
                return


class GenerationQueue:
    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (job, work) in arrival order; None: stop
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
        self._jobs.put((job, work))
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

    def work_forever(self) -> None:
        """Run the jobs one by one on this thread, until close()."""
        while (entry := self._jobs.get()) is not None:
            self._run(*entry)

    def start_worker_thread(self) -> threading.Thread:
        worker = threading.Thread(target=self.work_forever, name="nanosmol-generate", daemon=True)
        worker.start()
        return worker

    def close(self) -> None:
        """Cancel what runs or waits, and let the worker return."""
        with self._lock:
            jobs = list(self._admitted)
        for job in jobs:
            job.cancelled.set()
        self._jobs.put(None)
