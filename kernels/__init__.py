"""fedcore.kernels: Triton kernels, their plain-torch references and autograd wrappers.

Kernels take tensors and return tensors; nothing here knows about federation.
"""

if __name__ != "fedcore.kernels":
    # Reached only when the checkout itself is on sys.path (``python -m``/``-c`` run from the repo
    # root puts the cwd first), e.g. when transformers probes for Hugging Face's own "kernels".
    raise ImportError(
        "'kernels' is not a top-level module: use fedcore.kernels. The fedcore checkout is on sys.path; "
        "run from another directory, use the installed commands, or set PYTHONSAFEPATH=1 (and keep the "
        "checkout itself off PYTHONPATH: install fedcore instead)."
    )

from .fisher import (  # noqa: E402
    lora_inputs,
    persample_rowsum,
    persample_sqgrad,
    persample_sqgrad_reference,
    persample_sqnorm,
)
from .lora import lora_linear, lora_merge_, lora_unmerge_  # noqa: E402
from .quant_dispatch import Packed, choices, dequant, dequant_unpack, fresh_seed, quant_pack  # noqa: E402
from .quant_noise import gaussian_noise  # noqa: E402

__all__ = [
    "Packed",
    "choices",
    "dequant",
    "dequant_unpack",
    "fresh_seed",
    "gaussian_noise",
    "quant_pack",
    "lora_linear",
    "lora_merge_",
    "lora_unmerge_",
    "lora_inputs",
    "persample_rowsum",
    "persample_sqgrad",
    "persample_sqgrad_reference",
    "persample_sqnorm",
]
