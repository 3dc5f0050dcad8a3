"""A serving loop in front of any runner: single-sample requests in, batches up to the engine's batch out.

LoadGen's system under test (harness.measure.loadgen) and the fixed-concurrency mode (harness.measure.concurrency)
both hand their requests to a BatchServer. Each of its `workers` threads takes every queued request, up to
`max_batch`, runs them as one batch and answers them, so batches grow with the load as a dynamic batcher's do.
With the default two workers one batch is formed and started while the previous one runs: the enqueue-ahead
trtexec keeps (TensorRT: each worker has its own buffers on the runner's streams, see Runner.serving).

A failed batch still answers its requests (outputs None) and later batches are answered without running, so a
load generator that waits for every answer ends; the first error is kept in `error` for the caller to raise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from harness.backends.base import Runner

WORKERS = 2  # one batch running, the next one already started


@dataclass
class Request:
    index: int  # the sample, a row of the library
    tag: object  # what the answer is for (LoadGen's sample id)
    issued: float  # perf_counter() when it was submitted


class BatchServer:
    """`with BatchServer(runner, library, max_batch, answer) as server: server.submit([(index, tag), ...])`.

    `answer(requests, outputs)` is called from a worker thread once per batch, outputs[i] answering requests[i].
    `latencies_ms` holds every answered request's time from submit to answer; `batch_sizes` every batch run.
    """

    def __init__(self, runner: Runner, library: np.ndarray, max_batch: int,
                 answer: Callable[[list[Request], np.ndarray | None], None], workers: int = WORKERS,
                 streams: int = 1):
        self.library, self.max_batch, self.answer = library, max_batch, answer
        self.latencies_ms: list[float] = []
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self.first_issue = self.last_answer = None
        self._pending: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, args=(infer,), name=f"harness-serve-{i}", daemon=True)
                         for i, infer in enumerate(runner.serving(workers, streams))]
        for thread in self._threads:
            thread.start()

    def submit(self, items: Iterable[tuple[int, object]]) -> None:
        now = time.perf_counter()
        with self._cond:
            if self.first_issue is None:
                self.first_issue = now
            self._pending.extend(Request(index, tag, now) for index, tag in items)
            self._cond.notify_all()

    def _take(self) -> list[Request] | None:
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            count = min(self.max_batch, len(self._pending))
            return [self._pending.popleft() for _ in range(count)] or None

    def _work(self, infer: Callable[[np.ndarray], np.ndarray]) -> None:
        while (batch := self._take()) is not None:
            out = None
            if self.error is None:
                try:
                    out = infer(self.library[[r.index for r in batch]])
                except BaseException as exc:  # kept for the caller; the requests are still answered
                    self.error = self.error or exc
            done = time.perf_counter()
            self.latencies_ms.extend((done - r.issued) * 1e3 for r in batch)
            self.batch_sizes.append(len(batch))
            self.last_answer = done
            try:
                self.answer(batch, out)
            except BaseException as exc:
                self.error = self.error or exc

    def close(self) -> None:
        """Answer what is queued, then stop the workers."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> BatchServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def library_for(spec, budget_mb: float = 64.0, most: int = 1024) -> np.ndarray:
    """The samples requests point at (LoadGen's query sample library): seeded synthetic inputs of the model's
    shape, as many as fit in `budget_mb` (16 to `most`), so a large input does not fill the memory."""
    from harness.data.datasets import SyntheticDataset

    sample_bytes = 4 * int(np.prod(spec.input_shape))
    count = int(max(16, min(most, budget_mb * 1e6 // sample_bytes)))
    return np.ascontiguousarray(SyntheticDataset(spec, size=count).take("val", count)[0], dtype=np.float32)
