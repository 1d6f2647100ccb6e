"""Layer discovery: where each hook point of `neuronmap.points` lives in any Hugging Face model.

Found from the module tree alone (a meta-device model is enough, so no weights and no text are needed):

1. Stacks: an encoder-decoder model has two (`encoder.`, `decoder.` prefixes), others one.
2. In each stack, the block list: the ModuleList of identical modules whose length is the config's layer
   count (the shortest path wins a tie).
3. Per block: resid_pre / embed are the block's input (block 0 for embed), resid_post its output;
   attn_out and mlp_out the output of the attention and MLP child (`self_attn`, `attn`, `mlp`, ...), or
   the registry family's override where a family's modules say otherwise (post-norm BERT, Gemma 2, T5).
4. final_norm: the normalisation module beside the block list (`ln_f`, `norm`, `final_layer_norm`...).

Every other module is reachable by its raw path, with or without the base model's prefix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from neuronmap.errors import InvalidArgument
from neuronmap.points import parse_point
from neuronmap_extractor.registry import FamilySpec

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "SelfAttention", "mixer")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "ff", "DenseReluDense")
FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "final_norm", "norm_f")
_LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass(frozen=True)
class Site:
    """Where a point is read: the output (or the input) of one module.

    `width` is -1 when only running the module tells (some raw module paths). `axis` is the token axis
    the point's rows follow ("tokens", or "decoder_tokens" inside a decoder stack).
    """

    name: str
    module_path: str
    kind: str
    width: int
    stack: str = ""
    axis: str = "tokens"


@dataclass(frozen=True)
class Stack:
    name: str  # "", "encoder" or "decoder"
    path: str  # the module holding the block list
    blocks_path: str
    n_blocks: int


def _child_path(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def hidden_size(config: PretrainedConfig) -> int:
    text = config.get_text_config()
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(text, attr, None)
        if isinstance(value, int):
            return value
    raise InvalidArgument(f"cannot tell the hidden size of a {config.model_type} model from its config")


def module_width(module: torch.nn.Module) -> int:
    """The last output dimension a module produces, when its type tells (-1 otherwise)."""
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, torch.nn.Embedding):
        return module.embedding_dim
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear
        return int(module.nf)  # type: ignore[arg-type]
    weight = getattr(module, "weight", None)
    if "Norm" in type(module).__name__ and isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    return -1


def layer_count(config: PretrainedConfig, stack: str) -> int | None:
    text = config.get_text_config(decoder=stack == "decoder")
    if stack == "decoder" and getattr(text, "num_decoder_layers", None):
        return int(text.num_decoder_layers)
    for attr in _LAYER_COUNT_ATTRS:
        value = getattr(text, attr, None)
        if isinstance(value, int):
            return value
    return None


def _find_block_list(root: torch.nn.Module, root_path: str, expected: int | None) -> tuple[str, int]:
    """Path and length of the stack's block list (relative paths joined under root_path)."""
    candidates: list[tuple[str, int]] = []
    for path, module in root.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        candidates.append((path, len(module)))
    if expected is not None:
        exact = [c for c in candidates if c[1] == expected]
        if exact:
            candidates = exact
    if not candidates:
        raise InvalidArgument(
            f"no block list (a ModuleList of identical blocks) found under {root_path or 'the model'}"
        )
    # The shallowest list is the stack's; deeper ones sit inside blocks (T5's per-block layer list).
    path, n = min(candidates, key=lambda c: (c[0].count("."), -c[1] if expected is None else 0))
    return _child_path(root_path, path), n


def _match(block: torch.nn.Module, pattern: str) -> str | None:
    """First module path under `block` matching a dotted pattern where `*` is any one component."""
    regex = re.compile(
        "^" + r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in pattern.split(".")) + "$"
    )
    return next((path for path, _ in block.named_modules() if regex.match(path)), None)


def _first_child(block: torch.nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(block.named_children())
    return next((name for name in names if name in children), None)


class ModelMap:
    """Every canonical point and every module of one model, found from its structure."""

    def __init__(self, model: torch.nn.Module, config: PretrainedConfig, family: FamilySpec | None) -> None:
        self.model = model
        self.config = config
        self.family = family
        self.d_model = hidden_size(config)
        self.base_prefix = str(getattr(model, "base_model_prefix", "") or "")
        self._modules = dict(model.named_modules())
        self.stacks = list(self._find_stacks())
        self.points: dict[str, Site] = {}
        for stack in self.stacks:
            self._add_stack_points(stack)

    # -- structure ------------------------------------------------------------------------------
    def _find_stacks(self) -> Iterator[Stack]:
        if getattr(self.config, "is_encoder_decoder", False):
            paths = {id(m): p for p, m in self._modules.items()}
            for name, getter in (("encoder", "get_encoder"), ("decoder", "get_decoder")):
                sub = getattr(self.model, getter)()
                root_path = paths[id(sub)]
                blocks_path, n = _find_block_list(sub, root_path, layer_count(self.config, name))
                yield Stack(name, root_path, blocks_path, n)
            return
        blocks_path, n = _find_block_list(self.model, "", layer_count(self.config, ""))
        yield Stack("", blocks_path.rpartition(".")[0], blocks_path, n)

    def _override(self, site: str) -> str | None:
        return None if self.family is None else self.family.overrides.get(site)

    def _site(self, stack: Stack, name: str, path: str, kind: str, width: int | None = None) -> None:
        prefix = f"{stack.name}." if stack.name else ""
        axis = "decoder_tokens" if stack.name == "decoder" else "tokens"
        self.points[prefix + name] = Site(
            name=prefix + name,
            module_path=path,
            kind=kind,
            width=self.d_model if width is None else width,
            stack=stack.name,
            axis=axis,
        )

    def _add_stack_points(self, stack: Stack) -> None:
        self._site(stack, "embed", f"{stack.blocks_path}.0", "input")
        for i in range(stack.n_blocks):
            block_path = f"{stack.blocks_path}.{i}"
            block = self._modules[block_path]
            self._site(stack, f"blocks.{i}.resid_pre", block_path, "input")
            sites = (
                ["attn_out", "cross_attn_out", "mlp_out"]
                if stack.name == "decoder"
                else ["attn_out", "mlp_out"]
            )
            for site in sites:
                relative = self._sublayer(block, site)
                if relative is not None:
                    self._site(stack, f"blocks.{i}.{site}", f"{block_path}.{relative}", "output")
            self._site(stack, f"blocks.{i}.resid_post", block_path, "output")
        norm = self._final_norm(stack)
        if norm is not None:
            self._site(stack, "final_norm", norm, "output")

    def _sublayer(self, block: torch.nn.Module, site: str) -> str | None:
        override = self._override(site)
        if override is not None:
            return _match(block, override)
        if site == "attn_out":
            return _first_child(block, ATTENTION_NAMES)
        if site == "mlp_out":
            return _first_child(block, MLP_NAMES)
        return None  # cross-attention is found only where the family names it

    def _final_norm(self, stack: Stack) -> str | None:
        override = self._override("final_norm")
        parent = self._modules[stack.path] if stack.path else self.model
        if override is not None:
            found = _match(parent, override)
            return _child_path(stack.path, found) if found else None
        name = _first_child(parent, FINAL_NORM_NAMES)
        if name is None or "Norm" not in type(getattr(parent, name)).__name__:
            return None
        return _child_path(stack.path, name)

    # -- cost ---------------------------------------------------------------------------------------
    def parameters_run(self, sites: list[Site]) -> int:
        """Parameters a forward pass multiplies per token before every site has fired.

        Blocks of each stack up to the deepest site (all of them for final_norm or a module outside the
        blocks); the embedding tables are lookups, and the LM head never runs.
        """
        total = 0
        for stack in self.stacks:
            blocks = self._modules[stack.blocks_path]
            deepest = -1
            for site in sites:
                if site.stack != stack.name:
                    continue
                prefix = stack.blocks_path + "."
                if site.module_path.startswith(prefix):
                    index = int(site.module_path[len(prefix) :].split(".")[0])
                    deepest = max(deepest, index - 1 if site.kind == "input" else index)
                else:
                    deepest = stack.n_blocks - 1
            if stack.name == "encoder" and any(s.stack == "decoder" for s in sites):
                deepest = stack.n_blocks - 1  # the decoder needs the whole encoder
            total += sum(p.numel() for block in list(blocks)[: deepest + 1] for p in block.parameters())
        return total

    # -- lookup ---------------------------------------------------------------------------------
    def module_sites(self) -> list[Site]:
        """Every named module as a raw point (output), with its width when its type tells."""
        sites = []
        for path, module in self._modules.items():
            if not path:
                continue
            stack = next((s.name for s in self.stacks if s.name and path.startswith(s.path + ".")), "")
            axis = "decoder_tokens" if stack == "decoder" else "tokens"
            sites.append(Site(path, path, "output", module_width(module), stack, axis))
        return sites

    def _raw_candidates(self, name: str) -> Iterator[str]:
        yield name
        for prefix in {self.base_prefix, "model", "transformer"} - {""}:
            if name.startswith(prefix + "."):
                yield name[len(prefix) + 1 :]
            yield f"{prefix}.{name}"

    def resolve(self, name: str) -> Site:
        """The site of a canonical point or a raw module path; InvalidArgument with the nearest names."""
        name = name.strip()
        point = parse_point(name)
        if point is not None:
            if name in self.points:
                return self.points[name]
            raise InvalidArgument(self._unknown_point_message(name, point.stack, point.site))
        for candidate in self._raw_candidates(name):
            if candidate and candidate in self._modules:
                module = self._modules[candidate]
                stack = next(
                    (s.name for s in self.stacks if s.name and candidate.startswith(s.path + ".")), ""
                )
                axis = "decoder_tokens" if stack == "decoder" else "tokens"
                return Site(name, candidate, "output", module_width(module), stack, axis)
        close = difflib.get_close_matches(name, [*self.points, *self._modules], n=5, cutoff=0.6)
        hint = f"; nearest valid names: {', '.join(close)}" if close else ""
        raise InvalidArgument(f"{name!r} is neither a hook point nor a module of this model{hint}")

    def _unknown_point_message(self, name: str, stack: str, site: str) -> str:
        stacks = {s.name: s for s in self.stacks}
        if stack not in stacks:
            options = ", ".join(f"{s.name}.{name}" if s.name else name for s in self.stacks)
            return f"point {name!r} does not name a stack of this model; try {options}"
        blocks = stacks[stack].n_blocks
        if site == "final_norm":
            return "this model has no final_norm (a post-norm architecture normalises inside each block)"
        if site == "cross_attn_out":
            return f"{name!r}: cross-attention exists only in decoder blocks of encoder-decoder models"
        prefix = f"{stack}." if stack else ""
        return (
            f"point {name!r} does not exist: this model has {blocks} blocks "
            f"({prefix}blocks.0 to {prefix}blocks.{blocks - 1})"
        )
