"""Extraction through the real gRPC stack, checked against each model's own output_hidden_states.

Tiny random models cover the GPT-2, BERT and Llama families; the reference is a plain forward pass of
each prompt alone, so batching, padding and hooks are all under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from neuronmap.client import Client
from neuronmap.lake import decode, encode

PROMPTS = [
    "The capital of France is Paris.",
    "Hi",
    "Neurons in transformer models respond to features of their input tokens, and then some.",
    "What is the boiling point of water?",
    "def add(a, b): return a + b",
]
# fp16 keeps 11 significant bits; batched and single passes may also differ by float noise.
TOLERANCE = {"float16": (2**-10, 1e-3), "bfloat16": (2**-7, 1e-2), "float32": (1e-5, 1e-5)}
FAMILY_CLASS = {"gpt2": AutoModelForCausalLM, "llama": AutoModelForCausalLM, "bert": AutoModel}


def reference_hidden_states(folder: Path, family: str, prompts: list[str]) -> list[tuple[torch.Tensor, ...]]:
    """Each prompt alone through the model: its tuple of hidden states `[1, tokens, d]`."""
    model = FAMILY_CLASS[family].from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")
            out.append(model(**ids, output_hidden_states=True).hidden_states)
    return out


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_resid_post_equals_output_hidden_states(
    client: Client, tiny_model: object, family: str, dtype: str
) -> None:
    folder = tiny_model(family)  # type: ignore[operator]
    points = ["embed", "blocks.0.resid_post", "blocks.1.resid_post"]
    run = client.extract(str(folder), PROMPTS, points, dtype=dtype, batch_size=2)
    assert run.status == "complete"
    reference = reference_hidden_states(folder, family, PROMPTS)
    offsets = run.offsets()
    lengths = [h[0].shape[1] for h in reference]
    # Padding is never stored: exactly the real tokens of each prompt, in order.
    assert np.diff(offsets).tolist() == lengths
    rtol, atol = TOLERANCE[dtype]
    for index, point in enumerate(points):  # hidden_states[0] is the embedding output, [i+1] block i's
        stored = run.array(point)
        assert stored.shape == (sum(lengths), 32)
        for p, states in enumerate(reference):
            expected = states[index][0].numpy()
            got = stored[offsets[p] : offsets[p + 1]]
            np.testing.assert_allclose(
                got, expected, rtol=rtol, atol=atol, err_msg=f"{family} {point} prompt {p}"
            )
            # And it is exactly the expected value rounded to the storage dtype, up to float noise.
            rounded = decode(encode(expected, dtype), dtype).astype(np.float32)
            assert np.abs(got.astype(np.float32) - rounded).max() <= atol


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_reductions_equal_numpy_over_the_tokens_run(
    client: Client, tiny_model: object, reduction: str
) -> None:
    folder = tiny_model("llama")  # type: ignore[operator]
    points = ["blocks.1.resid_post", "blocks.2.mlp_out"]
    tokens = client.extract(str(folder), PROMPTS, points, dtype="float32", batch_size=3)
    reduced = client.extract(str(folder), PROMPTS, points, reduction=reduction, dtype="float32", batch_size=3)
    assert reduced.run_id != tokens.run_id
    offsets = tokens.offsets()
    for point in points:
        full = tokens.array(point)
        rows = reduced.array(point)
        assert rows.shape == (len(PROMPTS), 32)
        for p in range(len(PROMPTS)):
            span = full[offsets[p] : offsets[p + 1]].astype(np.float64)
            expected = span.mean(axis=0) if reduction == "mean" else span[-1]
            np.testing.assert_allclose(rows[p], expected, rtol=1e-5, atol=1e-6)


def test_same_request_twice_is_served_from_the_lake(client: Client, tiny_model: object) -> None:
    folder = tiny_model("gpt2")  # type: ignore[operator]
    prompts = ["one more prompt about cats", "and a second one"]
    events: list[object] = []
    first = client.extract(str(folder), prompts, ["blocks.2.resid_post"])
    second = client.extract(str(folder), prompts, ["blocks.2.resid_post"], on_event=events.append)
    assert second.run_id == first.run_id
    assert len(events) == 1 and events[0].cached  # type: ignore[attr-defined]
    np.testing.assert_array_equal(first.array("blocks.2.resid_post"), second.array("blocks.2.resid_post"))


def test_provenance_records_versions_model_and_reference_check(client: Client, tiny_model: object) -> None:
    folder = tiny_model("gpt2")  # type: ignore[operator]
    run = client.extract(str(folder), ["provenance please", "a second prompt here"], ["blocks.0.resid_post"])
    provenance = run.reader().provenance
    assert provenance["revision"].startswith("folder-sha256:")
    assert provenance["versions"]["torch"].startswith("2.13")
    assert provenance["device"] == "cpu" and provenance["storage_dtype"] == "float16"
    check = provenance["reference_check"]
    assert check["points_compared"] == ["blocks.0.resid_post"]
    assert check["max_abs_diff_hidden_states"] == 0.0
    assert check["max_abs_diff_batched_vs_alone"] < 1e-3
