"""The Gaussian noise field quant_pack adds, on its own (for tests, analysis and unpacked sends)."""

from __future__ import annotations

import os

import torch

from .quant_pack import noise_triton


def gaussian_noise(shape: tuple[int, ...] | torch.Size, *, seed: int, offset: int = 0, device="cpu") -> torch.Tensor:
    """fp32 N(0, 1) of ``shape`` (..., H): exactly the noise quant_pack adds at (seed, offset).

    Rows are the leading dims flattened; row r, column c uses Philox counter offset + r*ceil(H/4) +
    c mod ceil(H/4). Runs the Triton kernel on a CUDA device, or on the CPU under
    TRITON_INTERPRET=1; elsewhere it evaluates the numpy reference of the same stream.
    """
    shape = tuple(shape)
    if not shape or shape[-1] < 1:
        raise ValueError(f"shape must be (..., H) with H >= 1, got {shape}")
    if not (0 <= seed < 2**64 and 0 <= offset < 2**64):
        raise ValueError("seed and offset must be in [0, 2^64)")
    rows = 1
    for d in shape[:-1]:
        rows *= d
    device = torch.device(device)
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        signed = [v - 2**64 if v >= 2**63 else v for v in (seed, offset)]
        return noise_triton(rows, shape[-1], signed[0], signed[1], device).reshape(shape)
    from .quant_pack_ref import philox_normals

    return philox_normals(rows, shape[-1], seed, offset).reshape(shape)
