"""LoRALinear: a frozen linear plus a trainable low-rank update, in plain torch.

y = x W^T + b + s * (dropout(x) A^T) B^T with A (r, d_in), B (d_out, r), s = alpha / r. Initialised
as peft does (A Kaiming-uniform with a = sqrt(5), B zero), so a fresh adapter leaves the model's
output unchanged. The fused Triton path (fedcore.kernels) plugs in behind the same module.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


class LoRALinear(nn.Module):
    """Wraps ``base`` (``nn.Linear``, or transformers' ``Conv1D`` as in GPT-2) with a LoRA update.

    ``base`` stays frozen (its parameters get ``requires_grad=False``); ``lora_A`` (r, d_in) and
    ``lora_B`` (d_out, r) are trainable, in the dtype and on the device of the base weight.
    """

    def __init__(self, base: nn.Module, *, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if isinstance(base, nn.Linear):
            d_in, d_out = base.in_features, base.out_features
        elif isinstance(base, Conv1D):
            d_in, d_out = base.weight.shape  # Conv1D stores W as (d_in, d_out)
        else:
            raise TypeError(f"LoRA wraps nn.Linear or Conv1D, got {type(base).__name__}")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be an int >= 1, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        weight = base.weight
        self.r, self.alpha, self.scale = r, float(alpha), float(alpha) / r
        self.lora_A = nn.Parameter(torch.empty(r, d_in, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fused = True  # use the Triton kernel where it runs natively (CUDA); False forces torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_in) -> (..., d_out), same dtype as x. On CUDA (frozen nn.Linear base, no dropout)
        fedcore.kernels.lora_linear runs (impl "auto": cuBLAS composition); elsewhere plain torch."""
        frozen = not any(p.requires_grad for p in self.base.parameters())  # train_blocks(mode="full") unfreezes
        if (
            self.fused
            and frozen
            and x.is_cuda
            and isinstance(self.dropout, nn.Identity)
            and isinstance(self.base, nn.Linear)
        ):
            from fedcore.kernels import lora_linear

            return lora_linear(x, self.base.weight, self.lora_A, self.lora_B, self.scale, self.base.bias)
        update = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + self.scale * update

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"
