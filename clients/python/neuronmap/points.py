"""Hook point names: one vocabulary for every architecture.

    embed                     what the model feeds into its first block (token + position embeddings)
    blocks.{i}.resid_pre      the residual stream entering block i      [tokens, d_model]
    blocks.{i}.attn_out       attention's contribution to the stream    [tokens, d_model]
    blocks.{i}.mlp_out        the MLP's contribution to the stream      [tokens, d_model]
    blocks.{i}.resid_post     the residual stream leaving block i       [tokens, d_model]
    final_norm                the final normalisation after the last block
    encoder.<point> / decoder.<point>   the same inside an encoder-decoder model
    decoder.blocks.{i}.cross_attn_out   cross-attention's contribution in a decoder block

Any other name is taken as a raw module path (`transformer.h.5.mlp.c_proj`), as the original NeuronMap did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK_SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post")
DECODER_ONLY_SITES = ("cross_attn_out",)
STACKS = ("", "encoder", "decoder")

_CANONICAL = re.compile(
    r"^(?:(?P<stack>encoder|decoder)\.)?"
    r"(?:(?P<whole>embed|final_norm)|blocks\.(?P<block>\d+)\.(?P<site>resid_pre|resid_post|attn_out|mlp_out|cross_attn_out))$"
)


@dataclass(frozen=True)
class HookPoint:
    """A parsed canonical point. `block` is None for embed and final_norm."""

    stack: str
    site: str
    block: int | None = None

    @property
    def name(self) -> str:
        prefix = f"{self.stack}." if self.stack else ""
        if self.block is None:
            return f"{prefix}{self.site}"
        return f"{prefix}blocks.{self.block}.{self.site}"


def parse_point(name: str) -> HookPoint | None:
    """The canonical point `name` stands for, or None when it is a raw module path."""
    match = _CANONICAL.match(name.strip())
    if match is None:
        return None
    stack = match["stack"] or ""
    if match["whole"]:
        return HookPoint(stack, match["whole"])
    return HookPoint(stack, match["site"], int(match["block"]))


def layer_range(start: int, end: int, sites: tuple[str, ...] = ("resid_post",), stack: str = "") -> list[str]:
    """Points of blocks start..end-1 (as the original `--layer-range S E`), each site in order."""
    if start < 0 or end <= start:
        raise ValueError(f"layer range {start} {end} is empty; it takes blocks start..end-1")
    return [HookPoint(stack, site, i).name for i in range(start, end) for site in sites]
