"""Tiny random-weight causal LMs of the supported families, built from configs (no download).

Used by the demo, the tests and the benchmarks. Sizes are small enough for 2 CPU cores.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

FAMILIES = ("llama", "qwen2", "mistral", "gpt2")


def tiny_causal_lm(
    family: str = "llama",
    *,
    vocab_size: int = 128,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
    **overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised causal LM of ``family`` in fp32, eval mode, dropout off.

    Rotary families use grouped-query attention (``num_kv_heads`` < ``num_heads``); GPT-2 has
    learned positions and tied embeddings. ``overrides`` go to the config (e.g. ``sliding_window``,
    ``tie_word_embeddings``). Raises ``ValueError`` for an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    common: dict[str, Any] = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gpt2":
        config = GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=512,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
            **overrides,
        )
        cls: type[PreTrainedModel] = GPT2LMHeadModel
    else:
        rotary = dict(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            **common,
        )
        rotary.update(overrides)
        config_cls, cls = {
            "llama": (LlamaConfig, LlamaForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "mistral": (MistralConfig, MistralForCausalLM),
        }[family]
        config = config_cls(**rotary)
    torch.manual_seed(seed)
    model = cls(config)
    return model.float().eval()
