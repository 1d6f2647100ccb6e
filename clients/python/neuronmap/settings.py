"""Settings: the one place configuration comes from.

Order of precedence: environment variables `NEURONMAP_*`, then a TOML config file, then defaults.
The config file is `$NEURONMAP_CONFIG` if set, else `./neuronmap.toml` if it exists. Its keys are the
field names below (`lake_uri = "s3://bucket/lake"`).

The defaults describe the embedded stack: a local lake and catalog under `./neuronmap-data/` and one
gRPC endpoint on 127.0.0.1:50051.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"

# field name -> environment variable
ENV_VARS: dict[str, str] = {
    "lake_uri": "NEURONMAP_LAKE",
    "catalog_path": "NEURONMAP_CATALOG",
    "target": "NEURONMAP_TARGET",
    "catalog_target": "NEURONMAP_CATALOG_TARGET",
    "extractor_target": "NEURONMAP_EXTRACTOR_TARGET",
    "analyzer_target": "NEURONMAP_ANALYZER_TARGET",
    "s3_endpoint_url": "NEURONMAP_S3_ENDPOINT",
    "s3_key": "NEURONMAP_S3_KEY",
    "s3_secret": "NEURONMAP_S3_SECRET",
    "device": "NEURONMAP_DEVICE",
    "model_memory_gb": "NEURONMAP_MODEL_MEMORY_GB",
    "registry_path": "NEURONMAP_REGISTRY",
    "model_cache_dir": "NEURONMAP_MODEL_CACHE",
    "max_message_mb": "NEURONMAP_MAX_MESSAGE_MB",
    "window_mb": "NEURONMAP_WINDOW_MB",
    "writer": "NEURONMAP_WRITER",
    "max_prompts": "NEURONMAP_MAX_PROMPTS",
}


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Frozen: pass a changed copy (`dataclasses.replace`) instead of mutating."""

    lake_uri: str = "./neuronmap-data/lake"
    catalog_path: str = "./neuronmap-data/catalog.duckdb"
    target: str = DEFAULT_TARGET
    # Per-service overrides of `target` (a cluster routes by service name; these allow direct addresses).
    catalog_target: str = ""
    extractor_target: str = ""
    analyzer_target: str = ""
    s3_endpoint_url: str = ""
    s3_key: str = ""
    s3_secret: str = ""
    device: str = "auto"
    # Models stay loaded up to this many GiB of parameters; least recently used are unloaded first.
    model_memory_gb: float = 8.0
    registry_path: str = ""
    # Where converted weights of packaged models are kept (GGUF dequantised once, then safetensors).
    model_cache_dir: str = "./neuronmap-data/models"
    max_message_mb: int = 256
    # Activations of this many MiB are gathered before a write; bounds the extractor's memory (one window
    # inline, two with a background writer) and is the scope of length sorting.
    window_mb: float = 1024.0
    # auto | background | inline: store windows on a thread of their own, or between windows.
    # auto: background on a GPU or when torch leaves cores free, else inline (neuronmap_extractor.writer).
    writer: str = "auto"
    max_prompts: int = 1_000_000

    def for_service(self, service: str) -> str:
        """The gRPC target of one service ("catalog", "extractor", "analyzer")."""
        override: str = getattr(self, f"{service}_target")
        return override or self.target

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for the lake (S3 credentials and endpoint when set)."""
        options: dict[str, Any] = {}
        if self.s3_key:
            options["key"] = self.s3_key
        if self.s3_secret:
            options["secret"] = self.s3_secret
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        return options


def _coerce(name: str, raw: Any) -> Any:
    kind = Settings.__dataclass_fields__[name].type
    if kind in ("int", int):
        return int(raw)
    if kind in ("float", float):
        return float(raw)
    return str(raw)


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Builds Settings from defaults, the config file, the environment, then explicit overrides."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    config_path = env.get("NEURONMAP_CONFIG") or ("neuronmap.toml" if Path("neuronmap.toml").exists() else "")
    if config_path:
        with open(config_path, "rb") as f:
            for key, raw in tomllib.load(f).items():
                if key not in ENV_VARS:
                    raise ValueError(f"{config_path}: unknown setting {key!r}; known: {', '.join(ENV_VARS)}")
                values[key] = _coerce(key, raw)
    for key, var in ENV_VARS.items():
        if env.get(var):
            values[key] = _coerce(key, env[var])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(Settings(), **values)
