"""The Gaussian mechanism on h_A in plain torch: per-token or per-example L2 clipping.

The fused path is ``fedcore.kernels.quant_pack(clip=C, noise_std=z * C)`` (the ``int8+noise``
codec); these are its reference and the path for other codecs and for per-example clipping.
"""

from __future__ import annotations

import math

import torch

UNITS = ("token", "example")


def check_clip(clip: float, noise_multiplier: float) -> None:
    """``ValueError`` (one line) unless ``clip`` > 0 and ``noise_multiplier`` > 0, both finite."""
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip bound C must be a finite number > 0, got {clip!r}")
    if not (isinstance(noise_multiplier, int | float) and math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise multiplier z must be a finite number > 0, got {noise_multiplier!r}")


def clip_tokens(hidden: torch.Tensor, clip: float) -> torch.Tensor:
    """``hidden`` (..., H) with every row (token) scaled to an L2 norm of at most ``clip`` (its
    units); rows below the bound unchanged, a non-finite row left as it is. Same dtype, new tensor.
    """
    rows = hidden.float()
    norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    big = (norm > clip) & torch.isfinite(norm)
    factor = torch.where(big, clip / torch.where(big, norm, 1.0), 1.0)
    return (rows * factor).to(hidden.dtype)


def clip_examples(hidden: torch.Tensor, clip: float) -> torch.Tensor:
    """``hidden`` (B, T, H) with each example's whole (T, H) matrix (padded rows included: they
    leave the client too) scaled to a Frobenius norm of at most ``clip``. Same dtype, new tensor."""
    if hidden.dim() != 3:
        raise ValueError(f"per-example clipping takes h_A as (B, T, H), got shape {tuple(hidden.shape)}")
    flat = hidden.float().reshape(hidden.shape[0], -1)
    return clip_tokens(flat, clip).reshape(hidden.shape).to(hidden.dtype)


def clip_hidden(hidden: torch.Tensor, clip: float, unit: str) -> torch.Tensor:
    """``clip_tokens`` or ``clip_examples`` by ``unit`` ("token" | "example")."""
    if unit not in UNITS:
        raise ValueError(f"clipping unit must be one of {UNITS}, got {unit!r}")
    return clip_tokens(hidden, clip) if unit == "token" else clip_examples(hidden, clip)


def gaussian_mechanism(
    hidden: torch.Tensor, clip: float, noise_multiplier: float, unit: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Clip ``hidden`` by ``unit`` to ``clip`` and add N(0, (z * clip)^2) to every element (fp32
    noise, returned in hidden's dtype)."""
    check_clip(clip, noise_multiplier)
    clipped = clip_hidden(hidden, clip, unit).float()
    noise = torch.randn(clipped.shape, generator=generator, dtype=torch.float32, device=hidden.device)
    return (clipped + noise_multiplier * clip * noise).to(hidden.dtype)
