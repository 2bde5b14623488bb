"""Dynamic micro-batching: concurrent calls gathered for a few milliseconds and processed as one batch.

One query through a CLIP text tower costs nearly as much as a batch of 16 on a CPU (the weights
are streamed through the cache once per call), so a service that encodes each request alone
serialises on the encoder. A MicroBatcher's worker thread takes the first waiting item, keeps
gathering until `window_s` has passed or `max_batch` items wait, calls `process` once with all
of them, and hands each caller its own result (or the batch's exception).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs `process(items) -> results` (same length, same order) on batches of concurrent submissions."""

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        window_s: float,
        max_batch: int,
        name: str = "micro-batcher",
        on_batch: Callable[[int], None] | None = None,
    ):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"window_s must be >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self._process = process
        self._window_s = window_s
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: T) -> R:
        """Process `item` in the next batch and return its result (blocks until then)."""
        future: Future = Future()
        self._waiting.put((item, future))
        return future.result()

    def close(self) -> None:
        """Stop the worker after the batches already submitted."""
        self._waiting.put(_STOP)
        self._worker.join()

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._answer(batch)
            if stop:
                return

    def _gather(self, first) -> tuple[list, bool]:
        batch = [first]
        deadline = time.monotonic() + self._window_s
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._waiting.get(timeout=remaining) if remaining > 0 else self._waiting.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        return batch, False

    def _answer(self, batch: list) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = self._process([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
        except BaseException as error:  # every caller of the batch gets the failure
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)
