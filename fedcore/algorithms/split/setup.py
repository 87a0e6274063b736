"""Building a split run's parts from its config, identically in every process.

``fedcore.algorithms.builders`` gives every process the same base weights (random from
``model.seed``, or one checkpoint) and the same partition, so neither is shipped.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator

import torch

from fedcore.codec import Codec, noisy_int8
from fedcore.lora import inject_lora, lora_parameters
from fedcore.model import SplitModel, split_model

from ..builders import ClientData, Tokenizer, base_model, client_datasets, shuffled_epochs
from .config import SplitRunConfig
from .step import ClientParts, ServerParts

WARMUP_STEPS = 10  # linear warm-up, then cosine decay to 10% of lr, per optimizer


def lr_schedule(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Each optimizer gets its own schedule (FL-GLM's shared one left later clients at lr 0)."""

    def factor(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = min(1.0, (step - WARMUP_STEPS) / max(1, total_steps - WARMUP_STEPS))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def build_client_data(config: SplitRunConfig, tokenizer: Tokenizer) -> list[ClientData]:
    """The clients' shards (``builders.client_datasets``)."""
    return client_datasets(config.data, config.train.clients, config.train.batch_size, tokenizer)


def endless_batches(data: ClientData, config: SplitRunConfig, client: int, pad_id: int) -> Iterator[dict]:
    """Shuffled batches of one client's training data, epoch after epoch."""
    return shuffled_epochs(data, config.train.batch_size, config.train.seed + 7919 * client, pad_id)


def build_split(config: SplitRunConfig, tokenizer: Tokenizer) -> SplitModel:
    """The frozen base model on ``train.device``, split; identical in every process for the same config."""
    model = base_model(config.model, tokenizer.vocab_size).to(config.train.device)
    return split_model(model, config.split.blocks_a, config.split.blocks_c)


def add_lora(config: SplitRunConfig):
    """``inject_lora`` with the run's LoRA settings (call it on a part's ``layers``)."""
    lc = config.lora
    return functools.partial(inject_lora, targets=lc.targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)


def server_steps(config: SplitRunConfig) -> int:
    """Optimizer steps one body replica takes in the run: every client's every step in sequential
    mode, one per gathered step in client-batch mode, its own client's steps when hierarchical."""
    tc = config.train
    return tc.rounds * tc.local_steps * (tc.clients if config.split.mode == "sequential" else 1)


def server_parts(config: SplitRunConfig, sm: SplitModel) -> ServerParts:
    """The body with LoRA, its AdamW and its own LR schedule over ``server_steps(config)`` steps."""
    torch.manual_seed(config.train.seed + 1)
    add_lora(config)(sm.body.layers)
    opt = torch.optim.AdamW(lora_parameters(sm.body).values(), lr=config.train.lr, weight_decay=0.0)
    return ServerParts(sm.body, opt, lr_schedule(opt, server_steps(config)))


def client_parts(config: SplitRunConfig, sm: SplitModel, client: int) -> ClientParts:
    """Client ``client``'s own head and tail with LoRA, optimizer, schedule and noise stream."""
    torch.manual_seed(config.train.seed + 1000 + client)
    head, tail = copy.deepcopy((sm.head, sm.tail))  # tied weights stay tied within the pair
    for part in (head, tail):
        if len(part.layers):
            add_lora(config)(part.layers)
    params = [*lora_parameters(head).values(), *lora_parameters(tail).values()]
    opt = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=0.0)
    tc = config.train
    noise = torch.Generator(tc.device).manual_seed(tc.seed * 1000 + client)  # a distinct noise stream per client
    return ClientParts(head, tail, opt, lr_schedule(opt, tc.rounds * tc.local_steps), noise)


def h_a_noise(config: SplitRunConfig) -> tuple[float, bool]:
    """(std, relative) of the noise on h_A: ``privacy.noise_multiplier * privacy.clip`` (absolute)
    when the Gaussian mechanism is on, else [noise]."""
    pc = config.privacy
    if pc.enabled:
        return pc.noise_multiplier * pc.clip, False
    return config.noise.std, config.noise.relative


def wire_codecs(config: SplitRunConfig, client: int) -> tuple[dict[str, str | Codec], float]:
    """The codec per direction for ``client``'s link, and the noise std still to add by hand.

    With ``codecs.h_A = "int8+noise"`` the noise (and, for ``privacy.unit = "token"``, the
    clipping) is done in the packing kernel, its noise drawn from a Philox stream seeded per client
    from ``train.seed`` (reproducible runs; distinct clients), so the separate noise pass is off
    (0.0 returned); otherwise the std of ``h_a_noise`` is returned for it.
    """
    cc = config.codecs
    codecs: dict[str, str | Codec] = {"h_A": cc.h_A, "h_B": cc.h_B, "dh_B": cc.dh_B, "dh_A": cc.dh_A}
    std, relative = h_a_noise(config)
    if cc.h_A != "int8+noise":
        return codecs, std
    seed = None if secret_noise(config) else (config.train.seed * 1_000_003 + client * 7919 + 1) % 2**62
    codecs["h_A"] = noisy_int8(std, relative=relative, seed=seed, clip=kernel_clip(config))
    return codecs, 0.0


def secret_noise(config: SplitRunConfig) -> bool:
    """Whether h_A's noise comes from OS-drawn seeds the server cannot regenerate (the Gaussian
    mechanism always; [noise] when ``noise.secret``); otherwise from streams seeded by
    ``train.seed``, reproducible, and so known to a server that has the run's config."""
    return config.privacy.enabled or config.noise.secret


def kernel_clip(config: SplitRunConfig) -> float:
    """The clip bound the ``int8+noise`` kernel applies (per token); 0 when it does not clip."""
    pc = config.privacy
    fused = pc.enabled and pc.unit == "token" and config.codecs.h_A == "int8+noise"
    return pc.clip if fused else 0.0


def client_clip(config: SplitRunConfig) -> float:
    """The clip bound the client applies in torch before the codec (per example always; per token
    when the codec does not); 0 when it does not clip."""
    pc = config.privacy
    return pc.clip if pc.enabled and not kernel_clip(config) else 0.0
