"""Where the parts of a Hugging Face decoder-only causal LM live, family by family.

fedcore never forks modeling code: it finds the model's own embedding, decoder layers, final norm,
lm_head, rotary embedding and mask builders, and calls them in the order the model's forward does.
A family is recognised by the attributes of ``model.base_model`` (and, where other architectures
share those names, by ``config.model_type``); an architecture without them, or a configuration the
split would compute differently, is refused with a ``ValueError`` rather than split wrongly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

FULL = "full_attention"
SLIDING = "sliding_attention"


# Attribute names of the base model, per layout. Llama, Qwen2, Mistral, Gemma-2/3 (and most rotary
# decoders) follow the first; GPT-2 (learned positions, Conv1D projections) the second; GPT-NeoX
# and Falcon the last two, which other architectures share (GPT-NeoX-Japanese, Bloom), so those
# match only their own ``model_type``.
class _Names(NamedTuple):
    family: str
    embed: str
    layers: str
    norm: str
    positions: str | None = None
    dropout: str | None = None
    model_types: frozenset[str] | None = None  # None: any model type with these names

    def attributes(self) -> tuple[str, ...]:
        return tuple(n for n in (self.embed, self.layers, self.norm, self.positions, self.dropout) if n)


_LAYOUTS = (
    _Names("Llama, Qwen2, Mistral, Gemma-2/3", "embed_tokens", "layers", "norm"),
    _Names("GPT-2", "wte", "h", "ln_f", positions="wpe", dropout="drop"),
    _Names(
        "GPT-NeoX", "embed_in", "layers", "final_layer_norm", dropout="emb_dropout", model_types=frozenset({"gpt_neox"})
    ),
    _Names("Falcon", "word_embeddings", "h", "ln_f", model_types=frozenset({"falcon"})),
)

MASK_BUILDERS: dict[str, Callable] = {FULL: create_causal_mask, SLIDING: create_sliding_window_causal_mask}


@dataclass(frozen=True)
class DecoderLayout:
    """The modules of one causal LM that a split needs, found by attribute name.

    ``layer_types[i]`` is ``"full_attention"`` or ``"sliding_attention"`` for decoder layer ``i``:
    it picks the mask builder and, with ``rotary_per_type``, the rotary embedding (Gemma-3 has a
    local and a global one), as the model's own forward does.
    """

    embed: nn.Embedding
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    position_embed: nn.Embedding | None  # learned absolute positions (GPT-2); None for rotary
    embed_dropout: nn.Module | None
    rotary: nn.Module | None  # model.rotary_emb: (hidden, position_ids[, layer_type]) -> (cos, sin)
    layer_types: tuple[str, ...]
    rotary_per_type: bool = False  # rotary(hidden, position_ids, layer_type), as Gemma-3's
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap) after the lm_head (Gemma)
    alibi: bool = False  # Falcon's ALiBi: a per-head position bias built from the 2-D mask
    mask_kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments of the mask builders


def find_layout(model: nn.Module) -> DecoderLayout:
    """Locate the parts of ``model`` (a ``*ForCausalLM`` from transformers).

    Raises ``ValueError`` naming the supported layouts when ``model`` is not one of them, or naming
    the setting when its configuration is one the split does not reproduce.
    """
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        raise ValueError(
            f"cannot split {type(model).__name__}: pass a decoder-only causal LM from transformers "
            "(a *ForCausalLM with an lm_head, e.g. Llama, Qwen2, Mistral, GPT-2, Gemma-2/3, GPT-NeoX, Falcon)"
        )
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"cannot split {type(model).__name__}: encoder-decoder models are not supported")
    base = model.base_model
    model_type = getattr(config, "model_type", None)
    for names in _LAYOUTS:
        if not all(hasattr(base, n) for n in names.attributes()):
            continue
        if names.model_types is not None and model_type not in names.model_types:
            raise ValueError(
                f"cannot split {type(model).__name__}: its base model has {names.family}'s attribute names "
                f"({'/'.join(names.attributes())}) but model type {model_type!r} is not {names.family}; "
                f"its forward differs, so it is not supported"
            )
        _refuse_unsupported(type(model).__name__, config)
        layers = getattr(base, names.layers)
        rotary = getattr(base, "rotary_emb", None)
        return DecoderLayout(
            embed=getattr(base, names.embed),
            layers=layers,
            norm=getattr(base, names.norm),
            lm_head=model.get_output_embeddings(),
            position_embed=getattr(base, names.positions) if names.positions else None,
            embed_dropout=getattr(base, names.dropout) if names.dropout else None,
            rotary=rotary,
            layer_types=_layer_types(config, len(layers)),
            rotary_per_type=rotary is not None and "layer_type" in inspect.signature(type(rotary).forward).parameters,
            logit_softcap=getattr(config, "final_logit_softcapping", None),
            alibi=model_type == "falcon" and bool(config.alibi),
            # Falcon always materialises its mask (so ALiBi can be added onto it), rotary or not
            mask_kwargs={"allow_is_causal_skip": False} if model_type == "falcon" else {},
        )
    known = "; ".join("/".join(n.attributes()) + f" as in {n.family}" for n in _LAYOUTS)
    raise ValueError(f"cannot split {type(model).__name__}: its base model has none of the known layouts ({known})")


def _refuse_unsupported(model_name: str, config) -> None:
    """Refuse the settings a split would not compute as the unsplit model does."""
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError(
            f"cannot split {model_name}: use_bidirectional_attention=True (an encoder, e.g. EmbeddingGemma) "
            "is not supported; split_model needs causal attention"
        )


def _layer_types(config, num_layers: int) -> tuple[str, ...]:
    """Attention type per layer, as the model's forward chooses its mask.

    Qwen2- and Gemma-style configs list ``layer_types``; Mistral-style configs use a sliding window
    on every layer whenever ``sliding_window`` is set; others are full attention.
    """
    types = getattr(config, "layer_types", None)
    if types is None:
        sliding = getattr(config, "sliding_window", None) is not None
        types = [SLIDING if sliding else FULL] * num_layers
    types = tuple(types)
    unknown = set(types) - set(MASK_BUILDERS)
    if unknown:
        raise ValueError(f"cannot split: unsupported attention layer types {sorted(unknown)}")
    return types[:num_layers]


def falcon_alibi(
    config, hidden: torch.Tensor, attention_mask: torch.Tensor | None, past: int, causal_mask: Any
) -> tuple[torch.Tensor, Any]:
    """Falcon's ALiBi bias and the mask its layers get, as ``FalconModel.forward`` builds them.

    ``hidden`` (B, T, H); ``attention_mask`` (B, P + T) or None (no padding); ``past`` = P, tokens
    already cached; ``causal_mask`` from ``create_causal_mask(..., allow_is_causal_skip=False)``.
    Returns ``(alibi, mask)``: with a 4-D mask, alibi (B, heads, 1, P + T) and the mask holding the
    scaled bias (-inf-like where masked), in ``hidden``'s dtype; otherwise alibi (B * heads, 1,
    P + T) and the mask unchanged.
    """
    from transformers.models.falcon.modeling_falcon import build_alibi_tensor

    batch, steps, _ = hidden.shape
    heads = config.num_attention_heads
    if attention_mask is None:
        attention_mask = torch.ones((batch, steps + past), device=hidden.device, dtype=torch.long)
    alibi = build_alibi_tensor(attention_mask, heads, dtype=hidden.dtype)
    if causal_mask is None or causal_mask.ndim != 4:
        return alibi, causal_mask
    min_dtype = torch.finfo(hidden.dtype).min
    if causal_mask.dtype == torch.bool:
        zero = torch.full((), 0.0, device=causal_mask.device, dtype=hidden.dtype)
        causal_mask = torch.where(causal_mask, zero, min_dtype)
    alibi = alibi.reshape(batch, -1, *alibi.shape[1:])
    mask = torch.masked_fill(alibi / math.sqrt(config.hidden_size // heads), causal_mask < -1, min_dtype)
    return alibi, mask
