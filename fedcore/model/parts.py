"""Split a causal LM into head / body / tail modules (FL-GLM, FedSEA-LLaMA).

The parts hold the model's own modules (no copy): training a part trains the model. Each part is an
``nn.Module`` that needs nothing from the others, so it can be moved to another process alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .family import FULL, MASK_BUILDERS, DecoderLayout, falcon_alibi, find_layout
from .state import SplitState


@cache
def _cache_kwarg(fn: Callable) -> str:
    """The keyword under which ``fn`` (a mask builder, or a decoder layer's ``forward``) takes the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name still works there with a
    FutureWarning and is removed in 5.40); 5.17 knows only ``past_key_values``, and its decoder layers
    would swallow ``cache`` into their ``**kwargs`` and silently run without a cache. GPT-NeoX and
    Falcon layers take ``layer_past`` in both. So the callee's signature decides (``inspect`` follows
    the ``functools.wraps`` of transformers' deprecation and checkpointing wrappers down to the real
    function); a callee naming none of them gets the installed library's convention, read from
    ``create_causal_mask``.
    """
    params = inspect.signature(fn).parameters
    for name in ("cache", "past_key_values", "layer_past"):
        if name in params:
            return name
    return _LIBRARY_CACHE_KWARG


@cache
def _takes(fn: Callable, name: str) -> bool:
    """Whether ``fn`` names the parameter ``name`` (Falcon's layers take ``alibi``, even as None)."""
    return name in inspect.signature(fn).parameters


_LIBRARY_CACHE_KWARG = _cache_kwarg(MASK_BUILDERS[FULL])
# the model outputs' field got the same rename (5.24: ``cache``; 5.17: ``past_key_values``, which
# 5.24 still accepts with a deprecation message)
_OUTPUT_CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer layers of ``model`` in order (the model's own modules)."""
    return list(find_layout(model).layers)


def group_blocks(model: nn.Module, layers_per_block: int) -> list[nn.ModuleList]:
    """Group the layers into coordinate blocks of ``layers_per_block`` consecutive layers.

    The last block is shorter when the layer count is not a multiple. Raises ``ValueError`` unless
    ``1 <= layers_per_block <= num_layers``.
    """
    layers = blocks(model)
    if isinstance(layers_per_block, bool) or not isinstance(layers_per_block, int):
        raise ValueError(f"layers_per_block must be an int, got {layers_per_block!r}")
    if not 1 <= layers_per_block <= len(layers):
        raise ValueError(f"layers_per_block must be in [1, {len(layers)}], got {layers_per_block}")
    return [nn.ModuleList(layers[i : i + layers_per_block]) for i in range(0, len(layers), layers_per_block)]


class _LayerRun(nn.Module):
    """Runs a contiguous range of decoder layers exactly as the model's forward would.

    Builds this part's attention masks (one per attention type) with transformers' own mask
    builders and the rotary embedding with the model's own module, from the SplitState metadata.
    """

    def __init__(self, layout: DecoderLayout, config, start: int, stop: int):
        super().__init__()
        self.layers = nn.ModuleList(layout.layers[start:stop])
        self.layer_types = layout.layer_types[start:stop]
        self.start = start  # global index of self.layers[0]: attention modules cache under it
        self.rotary = layout.rotary if len(self.layers) else None
        self.rotary_per_type = layout.rotary_per_type
        self.alibi = layout.alibi
        self.mask_kwargs = dict(layout.mask_kwargs)
        self.config = config

    def new_cache(self) -> DynamicCache:
        """An empty KV cache; this part's layers fill only their own (global) slots."""
        return DynamicCache(config=self.config)

    def run(self, state: SplitState, cache: DynamicCache | None) -> torch.Tensor:
        hidden = state.hidden
        if not len(self.layers):
            return hidden
        past = cache.get_seq_length(self.start) if cache is not None else 0  # before this step's tokens
        masks = {}
        for kind in dict.fromkeys(self.layer_types):
            first = self.start + self.layer_types.index(kind)
            build = MASK_BUILDERS[kind]
            masks[kind] = build(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=state.attention_mask,
                position_ids=state.position_ids,
                layer_idx=first if cache is not None else None,
                **{_cache_kwarg(build): cache},  # `cache` in transformers 5.24, `past_key_values` in 5.17
                **self.mask_kwargs,
            )
        extra: dict[str, Any] = {}
        if _takes(type(self.layers[0]).forward, "alibi"):  # Falcon: the bias, or None with rotary
            extra["alibi"] = None
            if self.alibi:
                extra["alibi"], masks[FULL] = falcon_alibi(self.config, hidden, state.attention_mask, past, masks[FULL])
        # (cos, sin) per layer type, each (B, T, rotary dim); Gemma-3 has a local and a global rotary
        rotary: dict[str, Any] = {}
        if self.rotary is not None and self.rotary_per_type:
            rotary = {kind: self.rotary(hidden, state.position_ids, kind) for kind in dict.fromkeys(self.layer_types)}
        elif self.rotary is not None:
            shared = self.rotary(hidden, position_ids=state.position_ids)
            rotary = dict.fromkeys(self.layer_types, shared)
        for layer, kind in zip(self.layers, self.layer_types, strict=True):
            if rotary:
                extra["position_embeddings"] = rotary[kind]
            hidden = layer(
                hidden,
                attention_mask=masks[kind],
                position_ids=state.position_ids,
                use_cache=cache is not None,
                **{_cache_kwarg(type(layer).forward): cache},  # as for the masks above
                **extra,
            )
            if isinstance(hidden, tuple):  # Falcon's layers return (hidden, attention weights)
                hidden = hidden[0]
        return hidden


class SplitHead(_LayerRun):
    """Embeddings plus the first ``blocks_a`` layers: tokens -> h_A (client side)."""

    def __init__(self, layout: DecoderLayout, config, blocks_a: int):
        super().__init__(layout, config, 0, blocks_a)
        self.embed = layout.embed
        self.position_embed = layout.position_embed
        self.embed_dropout = layout.embed_dropout

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
    ) -> SplitState:
        """Embed ``input_ids`` (B, T) int64 and run the head layers.

        ``attention_mask`` is (B, P + T), 1 for real tokens, P = tokens already cached. Without
        ``position_ids`` positions are ``P + arange(T)``, as the unsplit model's forward uses
        (``split_generate`` passes padding-aware positions, as ``model.generate`` does).
        Returns a SplitState whose hidden is (B, T, H) in the model's dtype.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        steps = input_ids.shape[1]
        if position_ids is None:
            if attention_mask is not None:
                past = attention_mask.shape[1] - steps
            elif cache is not None and len(self.layers):
                past = cache.get_seq_length(self.start)
            else:
                past = 0
            position_ids = (torch.arange(steps, device=input_ids.device) + past).unsqueeze(0)
        hidden = self.embed(input_ids)
        if self.position_embed is not None:
            hidden = hidden + self.position_embed(position_ids)
        if self.embed_dropout is not None:
            hidden = self.embed_dropout(hidden)
        state = SplitState(hidden=hidden, position_ids=position_ids, attention_mask=attention_mask)
        return SplitState(self.run(state, cache), state.position_ids, state.attention_mask)


class SplitBody(_LayerRun):
    """The middle layers: h_A -> h_B (server side)."""

    def forward(self, state: SplitState, *, cache: DynamicCache | None = None) -> SplitState:
        """Run the body layers on ``state.hidden`` (B, T, H); metadata passes through unchanged."""
        return SplitState(self.run(state, cache), state.position_ids, state.attention_mask)


class SplitTail(_LayerRun):
    """The last ``blocks_c`` layers, the final norm and the lm_head: h_B -> logits, loss (client)."""

    def __init__(self, layout: DecoderLayout, config, start: int, loss_function):
        super().__init__(layout, config, start, len(layout.layers))
        self.norm = layout.norm
        self.lm_head = layout.lm_head
        self.logit_softcap = layout.logit_softcap
        self.loss_function = loss_function  # transformers' ForCausalLM loss: shifts labels by one

    def forward(
        self,
        state: SplitState,
        labels: torch.Tensor | None = None,
        *,
        cache: DynamicCache | None = None,
    ) -> CausalLMOutputWithPast:
        """Return ``.logits`` (B, T, V) and ``.loss`` (mean token cross-entropy, labels -100 ignored,
        shifted by one as in the unsplit model), or ``.loss = None`` without labels."""
        hidden = self.norm(self.run(state, cache))
        logits = self.lm_head(hidden)
        if self.logit_softcap is not None:  # Gemma's ForCausalLM caps the logits before the loss
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=logits.shape[-1])
        # the cache field's name depends on the transformers version (_OUTPUT_CACHE_FIELD)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUTPUT_CACHE_FIELD: cache})  # type: ignore[arg-type]


@dataclass
class SplitModel:
    """The three parts of a split causal LM; see ``split_model``.

    ``tied_embeddings`` says the head's embedding and the tail's lm_head share one weight: keep
    head and tail in one process (FL-GLM's client holds both) or synchronise them yourself.
    """

    head: SplitHead
    body: SplitBody
    tail: SplitTail
    num_layers: int
    tied_embeddings: bool

    def new_caches(self) -> tuple[DynamicCache, DynamicCache, DynamicCache]:
        """One empty KV cache per part (head, body, tail), for split generation."""
        return self.head.new_cache(), self.body.new_cache(), self.tail.new_cache()


def split_model(model: nn.Module, blocks_a: int, blocks_c: int) -> SplitModel:
    """Partition a transformers causal LM into head, body and tail.

    The head holds the embeddings and layers [0, blocks_a); the body [blocks_a, L - blocks_c); the
    tail the last ``blocks_c`` layers, the final norm and the lm_head. The body must keep at least
    one layer. Raises ``ValueError`` for counts outside ``blocks_a, blocks_c >= 0`` and
    ``blocks_a + blocks_c <= L - 1``, or for a model that is not a supported decoder-only LM.
    """
    layout = find_layout(model)
    num_layers = len(layout.layers)
    for name, value in (("blocks_a", blocks_a), ("blocks_c", blocks_c)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if blocks_a + blocks_c > num_layers - 1:
        raise ValueError(
            f"blocks_a + blocks_c must be <= {num_layers - 1} so the body keeps at least one of the "
            f"model's {num_layers} layers; got {blocks_a} + {blocks_c}"
        )
    config = model.config
    stop_b = num_layers - blocks_c
    head = SplitHead(layout, config, blocks_a)
    body = SplitBody(layout, config, blocks_a, stop_b)
    tail = SplitTail(layout, config, stop_b, model.loss_function)
    tied = layout.embed.weight is getattr(layout.lm_head, "weight", None)
    return SplitModel(head=head, body=body, tail=tail, num_layers=num_layers, tied_embeddings=tied)
