"""Storing windows: in the background while the next window computes, or inline.

After a window's arrays are stored the writer commits it (the run's `committed_prompts`) and calls
`on_commit`. Which one to use (`writer_mode`): a background writer overlaps storage I/O with compute
when there is a spare core, which is the case on a GPU (the CPU waits on the device) or when torch
leaves cores free. When torch's threads already occupy every core, as on a small CPU-only machine,
the writer's copies and syscalls take those cores from the forward pass and its threads stall at their
barriers: measured here (2 cores, SmolLM2, 30 points), extraction took 0.94x a bare forward with the
background writer and 0.82x writing inline (docs/benchmarks.md). So "auto" writes inline there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import torch

from neuronmap.errors import InvalidArgument
from neuronmap.lake import RunWriter

MODES = ("auto", "background", "inline")


class Writer(Protocol):
    def submit(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        """Stores prompts [p0, p1) (one `[rows, d]` array per point) and commits them."""

    def close(self) -> None:
        """Finishes every submitted window; raises the first error a write met."""


def writer_mode(setting: str, device: torch.device) -> str:
    """ "background" or "inline" for a setting of auto/background/inline on a device."""
    if setting not in MODES:
        raise InvalidArgument(f"writer {setting!r} is not one of {', '.join(MODES)}")
    if setting != "auto":
        return setting
    spare_core = torch.get_num_threads() < (os.cpu_count() or 1)
    return "background" if device.type != "cpu" or spare_core else "inline"


def make_writer(run: RunWriter, on_commit: Callable[[int], None], mode: str) -> Writer:
    return BackgroundWriter(run, on_commit) if mode == "background" else InlineWriter(run, on_commit)


class InlineWriter:
    """Stores each window in the caller's thread before the next one computes."""

    def __init__(self, run: RunWriter, on_commit: Callable[[int], None]) -> None:
        self._run = run
        self._on_commit = on_commit

    def submit(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        self._run.write(p0, p1, values)
        self._run.commit(p1)
        self._on_commit(p1)

    def close(self) -> None:
        pass


class BackgroundWriter:
    """Stores one window on a thread of its own while the caller computes the next.

    At most one window is with the writer: `submit` waits until the previous one is stored, so two
    windows are in memory at most (one being stored, one being filled). An error stops the writer and is
    raised to the caller on its next call.
    """

    def __init__(self, run: RunWriter, on_commit: Callable[[int], None]) -> None:
        self._inline = InlineWriter(run, on_commit)
        self._idle = threading.Semaphore(1)
        self._pending: tuple[int, int, Mapping[str, np.ndarray]] | None = None
        self._ready = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"writer-{run.run_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while self._pending is None and not self._closing:
                    self._ready.wait()
                if self._pending is None:
                    return
                window, self._pending = self._pending, None
            try:
                if self._error is None:
                    self._inline.submit(*window)
            except BaseException as error:
                self._error = error
            finally:
                self._idle.release()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        self._idle.acquire()  # the previous window is stored (or failed)
        if self._error is not None:
            self._idle.release()
            raise self._error
        with self._ready:
            self._pending = (p0, p1, values)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join()
        self._raise_if_failed()
