"""Tiny random-initialised models of every family, built from their config classes, saved as folders.

Each folder is a real Hugging Face model (config.json, safetensors, tokenizer) that the extractor loads
like any local model. The tokenizer is a small BPE trained in memory on a fixed text, so nothing is
downloaded and ids are stable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

VOCAB = 320
CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "What is the boiling point of water at sea level? It is one hundred degrees.",
    "Neurons in transformer models respond to features of their input tokens.",
    "def add(a, b): return a + b  # a small function in Python",
    "Mitochondria are the powerhouse of the cell; proteins fold into shapes.",
    "Zebras, quokkas and yaks: 0123456789 !?,.;:'\"()[]{}<>/\\|@#$%^&*-_=+~`",
]

# family -> (config class name, config kwargs, tokenizer style)
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt2": ("GPT2Config", {"n_layer": 3, "n_embd": 32, "n_head": 4, "n_positions": 128}, "causal"),
    "gpt_neo": (
        "GPTNeoConfig",
        {
            "num_layers": 4,
            "hidden_size": 32,
            "num_heads": 4,
            "max_position_embeddings": 128,
            "attention_types": [[["global", "local"], 2]],
            "window_size": 8,
        },
        "causal",
    ),
    "gptj": (
        "GPTJConfig",
        {"n_layer": 3, "n_embd": 32, "n_head": 4, "rotary_dim": 4, "n_positions": 128},
        "causal",
    ),
    "codegen": (
        "CodeGenConfig",
        {"n_layer": 3, "n_embd": 32, "n_head": 4, "rotary_dim": 4, "n_positions": 128, "n_ctx": 128},
        "causal",
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            "rotary_pct": 0.5,
        },
        "causal",
    ),
    "llama": (
        "LlamaConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        },
        "llama",
    ),
    "mistral": (
        "MistralConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            "sliding_window": 16,
        },
        "llama",
    ),
    "qwen2": (
        "Qwen2Config",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        },
        "causal",
    ),
    "gemma": (
        "GemmaConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        },
        "llama",
    ),
    "gemma2": (
        "Gemma2Config",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            "sliding_window": 16,
        },
        "llama",
    ),
    "phi": (
        "PhiConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            "partial_rotary_factor": 0.5,
        },
        "causal",
    ),
    "bert": (
        "BertConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        },
        "bert",
    ),
    "roberta": (
        "RobertaConfig",
        {
            "num_hidden_layers": 3,
            "hidden_size": 32,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 130,
            "type_vocab_size": 1,
        },
        "bert",
    ),
    "distilbert": (
        "DistilBertConfig",
        {"n_layers": 3, "dim": 32, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 128},
        "bert",
    ),
    "t5": (
        "T5Config",
        {"num_layers": 2, "num_decoder_layers": 3, "d_model": 32, "num_heads": 4, "d_kv": 8, "d_ff": 64},
        "t5",
    ),
}
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]"]


def build_tokenizer(style: str, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on CORPUS, with the special tokens and template of a family."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    if style == "bert":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
        )
    elif style == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", ids["</s>"])]
        )
    elif style == "llama":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", ids["<s>"])]
        )
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        cls_token="[CLS]" if style == "bert" else None,
        sep_token="[SEP]" if style == "bert" else None,
        padding_side=padding_side,
        model_max_length=128,
    )


def _auto_class(family: str) -> Callable[..., torch.nn.Module]:
    import transformers

    if family == "t5":
        return transformers.T5ForConditionalGeneration  # type: ignore[no-any-return]
    if family in ("bert", "roberta", "distilbert"):
        return transformers.AutoModel.from_config  # type: ignore[no-any-return]
    return transformers.AutoModelForCausalLM.from_config  # type: ignore[no-any-return]


def build(family: str, folder: Path, padding_side: str = "right", seed: int = 0) -> Path:
    """Writes a tiny random model of `family` (and its tokenizer) into `folder`; returns it."""
    import transformers

    class_name, kwargs, style = FAMILIES[family]
    tokenizer = build_tokenizer(style, padding_side)
    config_cls = getattr(transformers, class_name)
    specials = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if family == "t5":
        specials["decoder_start_token_id"] = tokenizer.pad_token_id
    config = config_cls(**kwargs, **specials)
    torch.manual_seed(seed)
    model: Any = _auto_class(family)(config)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
