"""The model registry: named models (models.yaml) and how any other reference resolves.

A model reference is, in order: a registry key (`gpt2_small`), a local folder holding a Hugging Face
model, or a hub id (`EleutherAI/pythia-70m`). Operators extend or override the packaged registry with
their own YAML of the same shape (settings.registry_path); its entries win.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from neuronmap.errors import InvalidArgument, NotFound

KINDS = ("causal", "encoder", "seq2seq")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
OVERRIDABLE_SITES = ("attn_out", "mlp_out", "cross_attn_out", "final_norm")


@dataclass(frozen=True)
class FamilySpec:
    """What discovery cannot tell alone about a family (keyed by the config's model_type)."""

    model_type: str
    kind: str
    label: str
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PackageSource:
    """Weights that ship inside an installed Python package."""

    name: str
    gguf_file: str = ""
    subdir: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One model as the registry (or an ad-hoc reference) describes it."""

    key: str
    hf_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    revision: str = ""
    package: PackageSource | None = None
    local_path: str = ""
    batch_size: int = 8
    max_length: int = 0
    note: str = ""
    in_registry: bool = True

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def source(self) -> str:
        if self.package is not None:
            return f"package:{self.package.name}"
        return "folder" if self.local_path else "hub"


class Registry:
    """Registry entries and families; `resolve` turns any model reference into a ModelSpec."""

    def __init__(self, models: Mapping[str, ModelSpec], families: Mapping[str, FamilySpec]) -> None:
        self.models = dict(models)
        self.families = dict(families)

    @staticmethod
    def load(extra_path: str = "") -> Registry:
        """The packaged registry, extended by the YAML at `extra_path` when given."""
        text = resources.files("neuronmap_extractor").joinpath("models.yaml").read_text()
        data = yaml.safe_load(text)
        if extra_path:
            with open(extra_path) as f:
                extra = yaml.safe_load(f) or {}
            data["families"] = {**data.get("families", {}), **extra.get("families", {})}
            data["models"] = {**data.get("models", {}), **extra.get("models", {})}
        families = {name: _family(name, raw) for name, raw in data.get("families", {}).items()}
        models = {key: _model(key, raw) for key, raw in data.get("models", {}).items()}
        return Registry(models, families)

    def family(self, model_type: str) -> FamilySpec | None:
        return self.families.get(model_type)

    def resolve(self, ref: str) -> ModelSpec:
        """Registry key, then local folder, then hub id; NotFound with the nearest keys otherwise."""
        ref = ref.strip()
        if not ref:
            raise InvalidArgument("no model given: name a registry key, a local folder or a hub id")
        if ref in self.models:
            return self.models[ref]
        path = Path(ref).expanduser()
        if path.is_dir():
            if not (path / "config.json").exists():
                raise InvalidArgument(f"folder {ref} holds no config.json: it is not a Hugging Face model")
            return ModelSpec(
                key=ref, hf_id=str(path.resolve()), local_path=str(path.resolve()), in_registry=False
            )
        if ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
            hint = self.nearest_keys(ref)
            raise NotFound(f"model {ref!r} is not a registry key, a folder with a model, or a hub id{hint}")
        return ModelSpec(key=ref, hf_id=ref, in_registry=False)

    def nearest_keys(self, ref: str) -> str:
        """'; did you mean a, b?' for registry keys close to ref, or ''."""
        close = difflib.get_close_matches(ref, list(self.models), n=3)
        return f"; did you mean {', '.join(close)}?" if close else ""


def _family(name: str, raw: Mapping[str, Any]) -> FamilySpec:
    kind = raw.get("kind", "causal")
    if kind not in KINDS:
        raise ValueError(f"registry family {name}: kind {kind!r} is not one of {KINDS}")
    overrides = {site: str(raw[site]) for site in OVERRIDABLE_SITES if site in raw}
    return FamilySpec(model_type=name, kind=kind, label=str(raw.get("label", name)), overrides=overrides)


def _model(key: str, raw: Mapping[str, Any]) -> ModelSpec:
    if "hf_id" not in raw:
        raise ValueError(f"registry model {key}: hf_id is required")
    package = raw.get("package")
    return ModelSpec(
        key=key,
        hf_id=str(raw["hf_id"]),
        config=dict(raw.get("config", {})),
        revision=str(raw.get("revision", "")),
        package=PackageSource(**package) if package else None,
        batch_size=int(raw.get("batch_size", 8)),
        max_length=int(raw.get("max_length", 0)),
        note=str(raw.get("note", "")),
    )
