"""Tokenising prompts, cutting them into windows and length-sorted batches, and padding a batch.

A window is a run of consecutive prompts whose activations fit the writer's memory budget; it is
written and committed as one piece, in prompt order. Inside a window prompts are sorted by length
(longest first, so a batch too large for memory shows at once) and cut into batches, so a batch pads to
nearly its own length instead of the longest prompt of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from neuronmap.errors import InvalidArgument

MAX_BATCH_TOKENS = 16384  # batch x padded length cap: bounds attention memory on long prompts


@dataclass(frozen=True)
class Tokenized:
    """Token ids of each prompt after truncation (`[tokens_p]` int32), and which prompts were cut."""

    ids: list[np.ndarray]
    truncated: list[int]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.ids], dtype=np.int64)


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> Tokenized:
    """Tokenises with the model's special tokens; prompts longer than max_length are truncated."""
    # verbose=False: transformers would warn of "indexing errors" for prompts we truncate just below.
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(encoded) if len(ids) > max_length]
    if long:
        # Re-encoded with truncation so the tokenizer keeps its trailing special tokens ([SEP], </s>).
        cut = tokenizer(
            [texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=max_length
        )
        for i, ids in zip(long, cut["input_ids"], strict=True):
            encoded[i] = ids
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise InvalidArgument(f"prompt {empty[0]} has no tokens (empty text and no special tokens)")
    return Tokenized([np.asarray(ids, dtype=np.int32) for ids in encoded], long)


def plan_windows(cost: np.ndarray, start: int, budget: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Consecutive prompt ranges from `start` whose summed `cost` stays within `budget` (one prompt at
    least). A window holding at least `multiple` prompts holds a multiple of them, so that it cuts into
    full batches (a partial batch pads to its longest prompt like a full one)."""
    windows = []
    p0 = start
    total = len(cost)
    cumulative = np.concatenate([[0], np.cumsum(cost)])
    while p0 < total:
        p1 = int(np.searchsorted(cumulative, cumulative[p0] + budget, side="right")) - 1
        p1 = min(max(p1, p0 + 1), total)
        if p1 < total and p1 - p0 >= multiple:
            p1 = p0 + (p1 - p0) // multiple * multiple
        windows.append((p0, p1))
        p0 = p1
    return windows


def plan_batches(
    lengths: np.ndarray, batch_size: int, max_batch_tokens: int = MAX_BATCH_TOKENS
) -> list[np.ndarray]:
    """Indices (into `lengths`) of each batch: longest prompts first, at most batch_size prompts and
    max_batch_tokens padded positions per batch."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    i = 0
    while i < len(order):
        longest = int(lengths[order[i]])
        size = max(1, min(batch_size, max_batch_tokens // max(1, longest)))
        batches.append(order[i : i + size])
        i += size
    return batches


def pad(token_ids: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads ids into `[batch, longest]` input_ids and attention_mask (int64).

    Always right: real tokens keep positions 0..n-1 whatever the tokenizer's padding side, and causal
    attention never sees the padding after them, so a prompt's values do not depend on its batch.
    """
    longest = max(len(t) for t in token_ids)
    input_ids = torch.full((len(token_ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
        mask[row, : len(ids)] = 1
    return input_ids, mask
