"""Split greedy generation: each part keeps the KV cache of its own layers.

Per step only the new token's hidden state (B, 1, H) and its small metadata cross between parts,
as they would between a client (head, tail) and a server (body).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .parts import SplitModel
from .state import SplitState


@dataclass
class GenerationTrace:
    """Bytes of SplitState payload that crossed each boundary during ``split_generate``."""

    head_to_body: list[int] = field(default_factory=list)
    body_to_tail: list[int] = field(default_factory=list)


def generation_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding-aware positions (B, T) int64: the count of real tokens before each one.

    This is what ``model.generate`` uses (padding slots get position 0), so left-padded rows see
    the same positions as unpadded ones.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


@torch.no_grad()
def split_generate(
    sm: SplitModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    trace: GenerationTrace | None = None,
) -> torch.Tensor:
    """Greedy decoding through head -> body -> tail with one KV cache per part.

    Args:
        input_ids: (B, T) int64 prompt, left-padded when rows differ in length.
        attention_mask: (B, T), 1 for real tokens; None means no padding.
        max_new_tokens: tokens to generate (>= 1).
        eos_token_id / pad_token_id: once a row emits EOS it is continued with ``pad_token_id``;
            generation stops early when every row is done, as ``model.generate`` does.
    Returns (B, T + n) int64: the prompt followed by the n <= max_new_tokens generated tokens.
    """
    body_cache = sm.body.new_cache()

    def body_step(state: SplitState, first: bool) -> SplitState:
        return sm.body(SplitState.from_wire(state.to_wire()), cache=body_cache)

    return generate_through(
        sm.head, sm.tail, body_step, input_ids, attention_mask, max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, trace=trace,
    )  # fmt: skip


def generate_through(
    head: Any,
    tail: Any,
    body_step: Callable[[SplitState, bool], SplitState],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    trace: GenerationTrace | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The client side of split greedy decoding: ``head`` and ``tail`` run here with their own KV
    caches; ``body_step(h_A, first)`` returns h_B from wherever the body lives (``first`` is True
    for the prompt, when the body must start a fresh cache). With ``use_cache=False`` every step
    recomputes the whole sequence in every part (the baseline that caching is measured against).
    Arguments and result as ``split_generate``."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if eos_token_id is not None and pad_token_id is None:
        raise ValueError("pad_token_id is needed with eos_token_id (finished rows are padded)")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = attention_mask.bool()
    positions = generation_positions(mask)
    head_cache = head.new_cache() if use_cache else None
    tail_cache = tail.new_cache() if use_cache else None
    tokens, step_ids = input_ids, input_ids
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        h_a = head(step_ids, mask, position_ids=positions, cache=head_cache)
        h_b = body_step(h_a, step == 0 or not use_cache)
        out = tail(SplitState.from_wire(h_b.to_wire()), cache=tail_cache)
        if trace is not None:
            trace.head_to_body.append(h_a.wire_nbytes())
            trace.body_to_tail.append(h_b.wire_nbytes())
        next_ids = out.logits[:, -1, :].argmax(dim=-1)
        if eos_token_id is not None:
            assert pad_token_id is not None  # checked above
            next_ids = torch.where(unfinished, next_ids, torch.full_like(next_ids, pad_token_id))
            unfinished &= next_ids != eos_token_id
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
        if not unfinished.any():
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        if use_cache:
            step_ids = next_ids[:, None]
            positions = positions[:, -1:] + 1
        else:  # the whole sequence again
            step_ids = tokens
            positions = generation_positions(mask)
    return tokens
