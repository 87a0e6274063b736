"""Tiny random-weight causal LMs of the supported families, built from configs (no download).

Used by the demo, the tests and the benchmarks. Sizes are small enough for 2 CPU cores.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    FalconConfig,
    FalconForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

FAMILIES = ("llama", "qwen2", "mistral", "gpt2", "gemma2", "gemma3", "gpt_neox", "falcon")

# Rotary decoders with Llama's config names: family -> (config class, model class)
_LLAMA_LIKE = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
}


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
    learned positions and tied embeddings. Gemma-2 alternates sliding (window 5) and full layers,
    with its attention and final-logit softcapping; Gemma-3 (text only) does the same with one
    rotary embedding per layer type. GPT-NeoX (Pythia) has multi-head attention with a fused qkv and
    a parallel residual; Falcon (7B style: multi-query, parallel attention, tied embeddings) takes
    ``num_kv_heads`` only with ``new_decoder_architecture=True``. ``overrides`` go to the config
    (e.g. ``sliding_window``, ``tie_word_embeddings``, ``alibi``; ``intermediate_size`` is Falcon's
    ``ffn_hidden_size``). Raises ``ValueError`` for an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    common: dict[str, Any] = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cls: type[PreTrainedModel]
    if family == "gpt2":
        config: Any = GPT2Config(
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
        cls = GPT2LMHeadModel
    elif family == "gpt_neox":
        neox = dict(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=512,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
        config = GPTNeoXConfig(**(neox | overrides))
        cls = GPTNeoXForCausalLM
    elif family == "falcon":
        falcon = dict(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            ffn_hidden_size=overrides.pop("intermediate_size", 2 * hidden_size),
            max_position_embeddings=512,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
        if overrides.get("new_decoder_architecture"):
            falcon["num_kv_heads"] = num_kv_heads
        config = FalconConfig(**(falcon | overrides))
        cls = FalconForCausalLM
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
        if family in ("gemma2", "gemma3"):
            head_dim = hidden_size // num_heads  # Gemma's default is 256, whatever the hidden size
            rotary.update(head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=5)
        if family == "gemma3":
            rotary["sliding_window_pattern"] = 2  # sliding, full, sliding, ...: both rotary types occur
        rotary.update(overrides)
        config_cls, cls = _LLAMA_LIKE[family]
        config = config_cls(**rotary)
    torch.manual_seed(seed)
    model = cls(config)
    return model.float().eval()
