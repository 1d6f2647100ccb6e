"""The background writer: stores one window while the next one computes.

The queue holds one window, so at most three windows are in memory (being computed, waiting, being
written). After a window's arrays are stored the writer commits it (the run's `committed_prompts`) and
calls `on_commit`; an error stops the writer and is raised to the producer on its next call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from neuronmap.lake import RunWriter


@dataclass(frozen=True)
class _Window:
    p0: int
    p1: int
    values: Mapping[str, np.ndarray]


class BackgroundWriter:
    def __init__(self, run: RunWriter, on_commit: Callable[[int], None]) -> None:
        self._run = run
        self._on_commit = on_commit
        self._queue: queue.Queue[_Window | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"writer-{run.run_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            window = self._queue.get()
            if window is None:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            try:
                self._run.write(window.p0, window.p1, window.values)
                self._run.commit(window.p1)
                self._on_commit(window.p1)
            except BaseException as error:
                self._error = error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        """Queues the window of prompts [p0, p1); blocks while the previous one is still queued."""
        self._raise_if_failed()
        self._queue.put(_Window(p0, p1, values))

    def close(self) -> None:
        """Waits for every queued window to be stored, then raises the writer's error if any."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
