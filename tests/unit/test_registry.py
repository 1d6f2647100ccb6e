"""The model registry: the original keys, their architecture facts, and how references resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuronmap.errors import InvalidArgument, NotFound
from neuronmap_extractor.discovery import ModelMap
from neuronmap_extractor.loading import facts_config, meta_model, model_kind
from neuronmap_extractor.registry import Registry

# key: (hub id, blocks per stack, d_model), from MODELS.md (with its corrections)
ORIGINAL = {
    "default": ("distilgpt2", [6], 768),
    "gpt2_small": ("gpt2", [12], 768),
    "gpt2_medium": ("gpt2-medium", [24], 1024),
    "gpt2_large": ("gpt2-large", [36], 1280),
    "gpt_neo_125m": ("EleutherAI/gpt-neo-125M", [12], 768),
    "gpt_neo_1_3b": ("EleutherAI/gpt-neo-1.3B", [24], 2048),
    "gpt_j_6b": ("EleutherAI/gpt-j-6B", [28], 4096),
    "bert_base": ("bert-base-uncased", [12], 768),
    "bert_large": ("bert-large-uncased", [24], 1024),
    "roberta_base": ("roberta-base", [12], 768),
    "distilbert": ("distilbert-base-uncased", [6], 768),
    "t5_small": ("t5-small", [6, 6], 512),
    "t5_base": ("t5-base", [12, 12], 768),
    "flan_t5_small": ("google/flan-t5-small", [8, 8], 512),
    "llama2_7b": ("meta-llama/Llama-2-7b-hf", [32], 4096),
    "codegen_350m": ("Salesforce/codegen-350M-mono", [20], 1024),
    "code_t5_small": ("Salesforce/codet5-small", [6, 6], 512),
    "scibert": ("allenai/scibert_scivocab_uncased", [12], 768),
    "biobert": ("dmis-lab/biobert-v1.1", [12], 768),
    "smollm2_135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", [30], 576),
    "minilm_l6": ("sentence-transformers/all-MiniLM-L6-v2", [6], 384),
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def _map(registry: Registry, key: str) -> ModelMap:
    spec = registry.resolve(key)
    config = facts_config(spec)
    family = registry.family(config.model_type)
    return ModelMap(meta_model(config, model_kind(config, family)), config, family)


@pytest.mark.parametrize("key", sorted(ORIGINAL))
def test_original_keys_and_their_architecture(registry: Registry, key: str) -> None:
    hf_id, blocks, d_model = ORIGINAL[key]
    spec = registry.resolve(key)
    assert spec.hf_id == hf_id
    model_map = _map(registry, key)
    assert [s.n_blocks for s in model_map.stacks] == blocks
    assert model_map.d_model == d_model
    prefix = "encoder." if len(blocks) == 2 else ""
    last = blocks[0] - 1
    for site in ("resid_pre", "attn_out", "mlp_out", "resid_post"):
        assert f"{prefix}blocks.{last}.{site}" in model_map.points


def test_families_beyond_the_original_list_are_registered(registry: Registry) -> None:
    types = {registry.resolve(key).model_type for key in registry.models}
    assert {"gpt_neox", "mistral", "qwen2", "gemma", "gemma2", "phi"} <= types


def test_module_path_corrections_of_models_md(registry: Registry) -> None:
    distilbert = _map(registry, "distilbert")
    assert distilbert.points["blocks.5.mlp_out"].module_path == "transformer.layer.5.ffn.lin2"
    gpt2 = _map(registry, "gpt2_small")
    # c_attn is the fused Q/K/V projection: 3 x d_model wide, and not what attn_out reads.
    assert gpt2.resolve("transformer.h.3.attn.c_attn").width == 3 * 768
    assert gpt2.points["blocks.3.attn_out"].module_path == "transformer.h.3.attn"
    bert = _map(registry, "bert_base")
    assert bert.points["blocks.0.attn_out"].module_path == "encoder.layer.0.attention.output.dense"
    assert "final_norm" not in bert.points  # post-norm: nothing after the last block


def test_raw_paths_with_or_without_the_base_model_prefix(registry: Registry) -> None:
    llama = _map(registry, "llama2_7b")
    assert llama.resolve("layers.3.mlp.down_proj").module_path == "model.layers.3.mlp.down_proj"
    assert llama.resolve("model.layers.3.mlp.down_proj").module_path == "model.layers.3.mlp.down_proj"
    bert = _map(registry, "bert_base")
    assert bert.resolve("encoder.layer.0.attention.output.dense").width == 768


def test_wrong_names_get_the_nearest_valid_ones(registry: Registry) -> None:
    bert = _map(registry, "bert_base")
    with pytest.raises(
        InvalidArgument, match=r"nearest valid names: encoder\.layer\.0\.attention\.output\.dense"
    ):
        bert.resolve("encoder.layer.0.attention.output.dens")
    with pytest.raises(InvalidArgument, match=r"12 blocks \(blocks\.0 to blocks\.11\)"):
        bert.resolve("blocks.12.resid_post")
    t5 = _map(registry, "t5_small")
    with pytest.raises(InvalidArgument, match=r"encoder\.blocks\.1\.resid_post"):
        t5.resolve("blocks.1.resid_post")


def test_resolving_folders_hub_ids_and_unknown_names(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    folder = registry.resolve(str(tmp_path))
    assert folder.local_path == str(tmp_path.resolve()) and not folder.in_registry
    assert registry.resolve("EleutherAI/pythia-14m").hf_id == "EleutherAI/pythia-14m"
    with pytest.raises(NotFound, match="did you mean gpt2_small"):
        registry.resolve("./gpt2_smal")
    with pytest.raises(InvalidArgument, match=r"no config\.json"):
        registry.resolve(str(tmp_path.parent))
    with pytest.raises(InvalidArgument):
        registry.resolve("  ")


def test_an_operator_registry_extends_the_packaged_one(tmp_path: Path) -> None:
    extra = tmp_path / "models.yaml"
    extra.write_text("models:\n  mine:\n    hf_id: org/mine\n    batch_size: 3\n")
    registry = Registry.load(str(extra))
    assert registry.resolve("mine").batch_size == 3
    assert "gpt2_small" in registry.models
