"""Windows, length-sorted batches and padding."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from neuronmap_extractor.batching import pad, plan_batches, plan_windows


def test_windows_cover_every_prompt_once_in_order_within_budget() -> None:
    rows = np.array([5, 1, 7, 3, 3, 9, 2])
    windows = plan_windows(rows, start=0, budget=10)
    assert windows[0][0] == 0 and windows[-1][1] == len(rows)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    for p0, p1 in windows:
        assert rows[p0:p1].sum() <= 10 or p1 - p0 == 1


def test_windows_hold_whole_batches_when_they_can() -> None:
    cost = np.ones(20, dtype=np.int64)
    assert plan_windows(cost, start=0, budget=7, multiple=3) == [(0, 6), (6, 12), (12, 18), (18, 20)]
    assert plan_windows(cost, start=0, budget=2, multiple=3) == [(p, p + 2) for p in range(0, 20, 2)]


def test_windows_resume_from_a_committed_prefix_and_fit_huge_prompts() -> None:
    rows = np.array([4, 4, 100, 4])
    assert plan_windows(rows, start=2, budget=10) == [(2, 3), (3, 4)]
    assert plan_windows(rows, start=4, budget=10) == []


def test_batches_sort_by_length_and_respect_size_and_token_caps() -> None:
    lengths = np.array([3, 50, 7, 50, 1, 20])
    batches = plan_batches(lengths, batch_size=2, max_batch_tokens=1000)
    assert [b.tolist() for b in batches] == [[1, 3], [5, 2], [0, 4]]
    capped = plan_batches(lengths, batch_size=8, max_batch_tokens=60)
    assert all(len(b) * lengths[b].max() <= 60 or len(b) == 1 for b in capped)
    assert sorted(np.concatenate(capped).tolist()) == list(range(len(lengths)))


def test_pad_is_always_right_padding() -> None:
    ids, mask = pad([np.array([5, 6, 7], np.int32), np.array([9], np.int32)], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == torch.long
