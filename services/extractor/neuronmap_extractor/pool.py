"""The model pool: models load on first use and stay loaded within a memory budget.

When a model would not fit, the least recently used ones are unloaded first. Only the device's job
worker uses loaded models, so a model is never unloaded while it runs.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
from pathlib import Path

import torch

from neuronmap.settings import Settings
from neuronmap_extractor.loading import LoadedModel, load_model
from neuronmap_extractor.registry import ModelSpec, Registry

log = logging.getLogger(__name__)


def estimated_bytes(location: str) -> int:
    """Bytes of the weight files at a local location (0 when unknown)."""
    folder = Path(location)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))


class ModelPool:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.budget = int(settings.model_memory_gb * (1 << 30))
        self._models: collections.OrderedDict[tuple[str, str], LoadedModel] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec, location: str, revision: str) -> LoadedModel:
        """The loaded model for (location, revision), loading it (and unloading others) if needed."""
        key = (location, revision)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            self._make_room(estimated_bytes(location))
        loaded = load_model(spec, self.registry, self.settings)
        with self._lock:
            self._models[key] = loaded
            self._make_room(0, keep=key)
        return loaded

    def models(self) -> list[LoadedModel]:
        """The loaded models, least recently used first."""
        with self._lock:
            return list(self._models.values())

    def _make_room(self, incoming: int, keep: tuple[str, str] | None = None) -> None:
        used = sum(m.n_bytes for m in self._models.values())
        for key in list(self._models):
            if used + incoming <= self.budget:
                break
            if key == keep:
                continue
            evicted = self._models.pop(key)
            used -= evicted.n_bytes
            log.info(
                "unloaded %s (%d MiB) to stay within %d MiB",
                evicted.spec.key,
                evicted.n_bytes >> 20,
                self.budget >> 20,
            )
            del evicted
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
