"""The leakage check at the end of every split run: how many of the other clients' held-out
tokens a linear inverter reads back from their h_A, fitted on a shadow sample of client 0's.

The server sees every h_A; under FL-GLM's collusion assumption client 0 gives it its own text,
so the server can pair client 0's h_A with tokens. Each h_A goes through exactly what the
clients do before it leaves (``client_release``: clipping, noise, the codec's rounding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from fedcore.codec import QuantCodec, get_codec
from fedcore.data import batches
from fedcore.lora import load_lora_state
from fedcore.privacy.attacks import RidgeInverter
from fedcore.privacy.capture import HiddenSample, capture
from fedcore.privacy.metrics import token_recovery

from ..builders import tokenizer_of
from .config import SplitRunConfig
from .noise import HiddenRelease
from .setup import add_lora, build_client_data, build_split, client_clip, h_a_noise, wire_codecs

SHADOW_EXAMPLES = 64  # of client 0's training examples: a small sample, as the check must be cheap


def client_release(config: SplitRunConfig, client: int, *, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """h_A (B, T, H) -> what the server receives from ``client``: the client's own clipping and
    noise pass, then its h_A codec encoded and decoded (fresh noise streams seeded by ``seed``)."""
    codecs, std = wire_codecs(config, client)
    codec = get_codec(codecs["h_A"])
    if isinstance(codec, QuantCodec) and codec.seed is not None:  # a fresh codec of this call's
        codec.seed = (codec.seed + 104_729 * (seed + 1)) % 2**62  # not the run's own stream
    own = HiddenRelease(std, h_a_noise(config)[1], client_clip(config), config.privacy.unit)
    gen = torch.Generator(config.train.device).manual_seed(seed * 7919 + client)

    def release(hidden: torch.Tensor) -> torch.Tensor:
        parts, dtype = codec.encode(own(hidden, gen))
        return codec.decode(parts, dtype)

    return release


def trained_head(config: SplitRunConfig, final_lora: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The clients' head at the end of the run: the base head with the last head LoRA average."""
    head = build_split(config, tokenizer_of(config.model)).head
    if len(head.layers):
        add_lora(config)(head.layers)
        load_lora_state(head, {k[len("head.") :]: v for k, v in final_lora.items() if k.startswith("head.")})
    return head.eval()


def split_leakage(config: SplitRunConfig, final_lora: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Token recovery (percent) of a ridge inverter fitted on ``SHADOW_EXAMPLES`` of client 0's
    training examples and applied to every other client's held-out data (client 0's own
    held-out data when it is alone), through the trained head."""
    t0 = time.perf_counter()
    tokenizer = tokenizer_of(config.model)
    data = build_client_data(config, tokenizer)
    head = trained_head(config, final_lora)
    shadow_batches = batches(
        data[0].train[:SHADOW_EXAMPLES], config.train.batch_size, seed=0, pad_id=tokenizer.pad_id, shuffle=False
    )
    shadow = capture(head, shadow_batches, release=client_release(config, 0, seed=1))
    victims = list(range(1, len(data))) or [0]
    inverter = RidgeInverter().fit(shadow)
    hits = total = 0
    for k in victims:
        sample: HiddenSample = capture(head, data[k].eval_batches, release=client_release(config, k, seed=2))
        hits += round(token_recovery(inverter.predict(sample), sample) * sample.tokens)
        total += sample.tokens
    return {
        "attack": inverter.name,
        "token_recovery": 100 * hits / max(total, 1),
        "shadow_tokens": shadow.tokens,
        "victim_tokens": total,
        "victims": victims,
        "seconds": time.perf_counter() - t0,
    }
