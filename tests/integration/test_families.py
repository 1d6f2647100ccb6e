"""Every family in the registry, proven on a tiny random model built from its config class.

For each: every hook point resolves and is extracted; resid_post equals the model's own hidden states;
the residual stream adds up (pre-norm: resid_post = resid_pre + attn_out + mlp_out; post-norm: the
block's own LayerNorms applied to those sums); a prompt's values do not depend on its batch, whatever
side the tokenizer pads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, T5ForConditionalGeneration

from neuronmap.client import Client, Run
from tests.tiny_models import FAMILIES

TinyModel = Callable[..., Path]
PROMPTS = [
    "The capital of France is Paris.",
    "Hi",
    "Neurons in transformer models respond to features of their input tokens, and then some more.",
    "What is the boiling point of water?",
]
DECODER_ONLY = [f for f in FAMILIES if f not in ("bert", "roberta", "distilbert", "t5")]
ENCODERS = ["bert", "roberta", "distilbert"]
RTOL, ATOL = 1e-4, 1e-5  # float32 storage: batched and single passes differ by float noise only


def _all_points(client: Client, folder: Path) -> list[str]:
    return [p.point for p in client.describe(str(folder)).points]


def _load(family: str, folder: Path) -> Any:
    if family == "t5":
        return T5ForConditionalGeneration.from_pretrained(folder).eval()
    cls = AutoModel if family in ENCODERS else AutoModelForCausalLM
    return cls.from_pretrained(folder).eval()


def _prompt_rows(run: Run, point: str, p: int) -> np.ndarray:
    offsets = run.offsets()
    return run.array(point)[offsets[p] : offsets[p + 1]].astype(np.float64)


@pytest.mark.parametrize("family", [*DECODER_ONLY, *ENCODERS])
def test_every_point_of_a_family(client: Client, tiny_model: TinyModel, family: str) -> None:
    folder = tiny_model(family)
    points = _all_points(client, folder)
    n_blocks = client.describe(str(folder)).info.n_blocks
    expected = {
        "embed",
        *(
            f"blocks.{i}.{s}"
            for i in range(n_blocks)
            for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")
        ),
    }
    assert expected <= set(points), sorted(expected - set(points))
    run = client.extract(str(folder), PROMPTS, points, dtype="float32", batch_size=3)
    model = _load(family, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for p, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            hidden = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True).hidden_states
        assert len(hidden) == n_blocks + 1
        np.testing.assert_allclose(_prompt_rows(run, "embed", p), hidden[0][0], rtol=RTOL, atol=ATOL)
        for i in range(n_blocks - 1):  # the last hidden state may be taken after the final norm
            np.testing.assert_allclose(
                _prompt_rows(run, f"blocks.{i}.resid_post", p), hidden[i + 1][0], rtol=RTOL, atol=ATOL
            )
        if "final_norm" in points:
            np.testing.assert_allclose(
                _prompt_rows(run, "final_norm", p), hidden[-1][0], rtol=RTOL, atol=ATOL
            )
        for i in range(n_blocks):
            pre = _prompt_rows(run, f"blocks.{i}.resid_pre", p)
            attn = _prompt_rows(run, f"blocks.{i}.attn_out", p)
            mlp = _prompt_rows(run, f"blocks.{i}.mlp_out", p)
            post = _prompt_rows(run, f"blocks.{i}.resid_post", p)
            if i > 0:
                np.testing.assert_allclose(
                    pre, _prompt_rows(run, f"blocks.{i - 1}.resid_post", p), rtol=0, atol=0
                )
            if family in ENCODERS:
                expected_post = _post_norm_block(model, family, i, pre, attn, mlp)
            else:
                expected_post = pre + attn + mlp
            np.testing.assert_allclose(
                post, expected_post, rtol=1e-4, atol=1e-4, err_msg=f"{family} block {i}"
            )


def _post_norm_block(
    model: Any, family: str, i: int, pre: np.ndarray, attn: np.ndarray, mlp: np.ndarray
) -> np.ndarray:
    """A post-norm block's output from its parts: LN2(LN1(pre + attn) + mlp), with the block's own norms."""
    if family == "distilbert":
        block = model.transformer.layer[i]
        first, second = block.sa_layer_norm, block.output_layer_norm
    else:
        block = model.encoder.layer[i]
        first, second = block.attention.output.LayerNorm, block.output.LayerNorm
    with torch.no_grad():
        middle = first(torch.from_numpy(pre + attn).float())
        return second(middle + torch.from_numpy(mlp).float()).double().numpy()  # type: ignore[no-any-return]


def test_t5_encoder_points_need_only_the_question(client: Client, tiny_model: TinyModel) -> None:
    folder = tiny_model("t5")
    points = [p for p in _all_points(client, folder) if p.startswith("encoder.")]
    run = client.extract(str(folder), PROMPTS, points, dtype="float32", batch_size=2)
    assert run.spec["decoder_input"] == "none"
    model = T5ForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for p, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            hidden = model.get_encoder()(
                **tokenizer(prompt, return_tensors="pt"), output_hidden_states=True
            ).hidden_states
        np.testing.assert_allclose(
            _prompt_rows(run, "encoder.blocks.0.resid_post", p), hidden[1][0], rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            _prompt_rows(run, "encoder.final_norm", p), hidden[-1][0], rtol=RTOL, atol=ATOL
        )
        for i in range(2):
            parts = sum(
                _prompt_rows(run, f"encoder.blocks.{i}.{s}", p) for s in ("resid_pre", "attn_out", "mlp_out")
            )
            np.testing.assert_allclose(
                _prompt_rows(run, f"encoder.blocks.{i}.resid_post", p), parts, rtol=1e-4, atol=1e-4
            )


@pytest.mark.parametrize("targets", [[], ["Paris", "Hello there", "Features", "100 degrees"]])
def test_t5_decoder_points_take_targets_or_the_start_token(
    client: Client, tiny_model: TinyModel, targets: list[str]
) -> None:
    folder = tiny_model("t5")
    points = [
        "encoder.blocks.1.resid_post",
        "decoder.blocks.0.resid_post",
        "decoder.blocks.2.cross_attn_out",
        "decoder.blocks.2.resid_pre",
        "decoder.blocks.2.attn_out",
        "decoder.blocks.2.mlp_out",
        "decoder.blocks.2.resid_post",
    ]
    run = client.extract(str(folder), PROMPTS, points, dtype="float32", batch_size=3, decoder_targets=targets)
    assert run.spec["decoder_input"].startswith("start token")
    model = T5ForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dec_offsets = run.reader().offsets("decoder_tokens")
    dec_ids = run.reader().token_ids("decoder_tokens")
    start = model.config.decoder_start_token_id
    for p, prompt in enumerate(PROMPTS):
        expected_ids = [
            start,
            *(tokenizer(targets[p], add_special_tokens=False)["input_ids"] if targets else []),
        ]
        assert dec_ids[dec_offsets[p] : dec_offsets[p + 1]].tolist() == expected_ids
        with torch.no_grad():
            out = model(
                **tokenizer(prompt, return_tensors="pt"),
                decoder_input_ids=torch.tensor([expected_ids]),
                output_hidden_states=True,
            )
        rows = slice(int(dec_offsets[p]), int(dec_offsets[p + 1]))
        got = run.array("decoder.blocks.0.resid_post")[rows].astype(np.float64)
        np.testing.assert_allclose(got, out.decoder_hidden_states[1][0], rtol=RTOL, atol=ATOL)
        parts = sum(
            run.array(f"decoder.blocks.2.{s}")[rows].astype(np.float64)
            for s in ("resid_pre", "attn_out", "cross_attn_out", "mlp_out")
        )
        np.testing.assert_allclose(
            run.array("decoder.blocks.2.resid_post")[rows], parts, rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "bert", "t5"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_never_changes_a_result(
    client: Client, tiny_model: TinyModel, family: str, padding_side: str
) -> None:
    folder = tiny_model(family, padding_side=padding_side)
    point = "encoder.blocks.1.resid_post" if family == "t5" else "blocks.1.resid_post"
    batched = client.extract(str(folder), PROMPTS, [point], dtype="float32", batch_size=len(PROMPTS))
    for p, prompt in enumerate(PROMPTS):
        alone = client.extract(str(folder), [prompt], [point], dtype="float32")
        np.testing.assert_allclose(
            _prompt_rows(batched, point, p), alone.array(point).astype(np.float64), rtol=RTOL, atol=ATOL
        )
    for reduction in ("mean", "last"):
        reduced = client.extract(
            str(folder), PROMPTS, [point], reduction=reduction, dtype="float32", batch_size=len(PROMPTS)
        )
        singles = [
            client.extract(str(folder), [q], [point], reduction=reduction, dtype="float32").array(point)[0]
            for q in PROMPTS
        ]
        np.testing.assert_allclose(reduced.array(point), np.stack(singles), rtol=RTOL, atol=ATOL)
