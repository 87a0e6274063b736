"""Where the parts of a Hugging Face decoder-only causal LM live, family by family.

fedcore never forks modeling code: it finds the model's own embedding, decoder layers, final norm,
lm_head, rotary embedding and mask builders, and calls them in the order the model's forward does.
A family is recognised by the attributes of ``model.base_model``; an architecture without them is
refused with a ``ValueError`` rather than split wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

FULL = "full_attention"
SLIDING = "sliding_attention"


# Attribute names of the base model, per layout. Llama, Qwen2, Mistral (and most rotary decoders)
# follow the first; GPT-2 (learned positions, Conv1D projections) the second.
class _Names(NamedTuple):
    embed: str
    layers: str
    norm: str
    positions: str | None
    dropout: str | None


_LAYOUTS = (
    _Names(embed="embed_tokens", layers="layers", norm="norm", positions=None, dropout=None),
    _Names(embed="wte", layers="h", norm="ln_f", positions="wpe", dropout="drop"),
)

MASK_BUILDERS: dict[str, Callable] = {FULL: create_causal_mask, SLIDING: create_sliding_window_causal_mask}


@dataclass(frozen=True)
class DecoderLayout:
    """The modules of one causal LM that a split needs, found by attribute name.

    ``layer_types[i]`` is ``"full_attention"`` or ``"sliding_attention"`` for decoder layer ``i``:
    it picks the mask builder, as the model's own forward does.
    """

    embed: nn.Embedding
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    position_embed: nn.Embedding | None  # learned absolute positions (GPT-2); None for rotary
    embed_dropout: nn.Module | None
    rotary: nn.Module | None  # model.rotary_emb: (hidden, position_ids) -> (cos, sin)
    layer_types: tuple[str, ...]


def find_layout(model: nn.Module) -> DecoderLayout:
    """Locate the parts of ``model`` (a ``*ForCausalLM`` from transformers).

    Raises ``ValueError`` naming the supported layouts when ``model`` is not one of them.
    """
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        raise ValueError(
            f"cannot split {type(model).__name__}: pass a decoder-only causal LM from transformers "
            "(a *ForCausalLM with an lm_head, e.g. Llama, Qwen2, Mistral, GPT-2)"
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"cannot split {type(model).__name__}: encoder-decoder models are not supported")
    base = model.base_model
    for names in _LAYOUTS:
        if all(hasattr(base, n) for n in (names.embed, names.layers, names.norm)):
            layers = getattr(base, names.layers)
            config = model.config
            return DecoderLayout(
                embed=getattr(base, names.embed),
                layers=layers,
                norm=getattr(base, names.norm),
                lm_head=model.get_output_embeddings(),
                position_embed=getattr(base, names.positions) if names.positions else None,
                embed_dropout=getattr(base, names.dropout) if names.dropout else None,
                rotary=getattr(base, "rotary_emb", None),
                layer_types=_layer_types(config, len(layers)),
            )
    raise ValueError(
        f"cannot split {type(model).__name__}: its base model has none of the known layouts "
        "(embed_tokens/layers/norm as in Llama, Qwen2, Mistral; wte/h/ln_f as in GPT-2)"
    )


def _layer_types(config, num_layers: int) -> tuple[str, ...]:
    """Attention type per layer, as the model's forward chooses its mask.

    Qwen2-style configs list ``layer_types``; Mistral-style configs use a sliding window on every
    layer whenever ``sliding_window`` is set; others are full attention.
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
