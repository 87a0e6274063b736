"""One lock for Triton launches on CPU tensors (the interpreter, TRITON_INTERPRET=1).

The interpreter is not thread-safe: a launch patches ``triton.language`` globals for its
duration, so two threads launching at once break each other (measured: "Did you forget to add
@triton.jit ? (`_semantic` argument must be provided outside of JIT functions.)" and
"y >= grid_dim[1]" when in-process FL clients ran the Fisher kernels in threads). CPU launches
therefore take one process-wide lock; CUDA launches go straight through.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch

_LOCK = threading.RLock()


def launch_guard(t: torch.Tensor) -> Any:
    """A context manager to hold around a kernel launch on ``t``'s device."""
    return contextlib.nullcontext() if t.is_cuda else _LOCK
