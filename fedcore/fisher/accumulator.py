"""FisherAccumulator: diagonal-Fisher statistics of LoRA factors or full Linear weights, collected
through module hooks during an ordinary backward, without per-sample gradients.

Loss convention: the statistics are those of the per-sample gradients of the loss you
backpropagate, written as a sum over samples, L = sum_n L_n. If your loss is a mean over the B
samples (L = mean_n L_n), pass ``grad_scale=B`` to get the gradients of each sample's own L_n
(BackPACK and Opacus document the same trap). transformers' causal-LM loss is a mean over all
answer tokens of the batch: there sample n's term is (its token losses) / (batch token count).
With an fp16 GradScaler of scale S, pass ``grad_scale=1/S`` (the statistics are squares).
Padding: ``set_mask(attention_mask)`` before the backward makes masked tokens contribute nothing
(with labels of -100 on padding their output gradients are zero anyway; the mask also covers
losses that do not ignore them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from fedcore.kernels import lora_inputs, persample_sqgrad, persample_sqnorm
from fedcore.lora import LoRALinear

STATS = ("diag", "trace", "rowsum")


class FisherAccumulator:
    """Hooks ``model``'s target layers; after each backward:

    - ``scores``: (B,) per-sample traces of the diagonal empirical Fisher (squared per-sample
      gradient norms) summed over every target parameter, for the last batch (difficulty scores;
      a forward after a completed backward starts the next batch);
    - ``diag[name]`` / ``rowsum[name]``: sums over the batches since the last ``commit()``, shaped
      like the parameter / its rows (neuron scores);
    - ``commit()`` folds them into ``fisher[name]`` / ``fisher_rowsum[name]`` with momentum:
      F <- gamma F + (1 - gamma) F_new (the first commit takes F_new as is).

    target "lora": every ``LoRALinear`` (parameters ``...lora_A``, ``...lora_B``; with
    ``only_trainable`` those whose factors require grad); "full": every ``nn.Linear`` whose weight
    requires grad at forward time (the weight only; biases are not tracked). A module called twice
    before a backward is refused: a reused weight's per-sample gradient sums both uses.
    """

    def __init__(self, model: nn.Module, *, target: str = "lora", stats: Iterable[str] = STATS,
                 momentum: float = 0.9, grad_scale: float = 1.0, only_trainable: bool = True):  # fmt: skip
        if target not in ("lora", "full"):
            raise ValueError(f"target must be 'lora' or 'full', got {target!r}")
        self.stats = tuple(stats)
        if not self.stats or set(self.stats) - set(STATS):
            raise ValueError(f"stats must be a non-empty subset of {STATS}, got {self.stats}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.target, self.momentum, self.grad_scale = target, momentum, grad_scale
        self.only_trainable = only_trainable
        self.scores: torch.Tensor | None = None
        self.diag: dict[str, torch.Tensor] = {}
        self.rowsum: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.fisher_rowsum: dict[str, torch.Tensor] = {}
        self._mask: torch.Tensor | None = None
        self._called: set[str] = set()
        self._backward_seen = False
        self._handles: list[Any] = []
        for name, module in model.named_modules():
            if target == "lora" and isinstance(module, LoRALinear):
                if not isinstance(module.dropout, nn.Identity):
                    raise ValueError(f"{name}: LoRA dropout makes the hooked input differ from the LoRA "
                                     "path's; use dropout=0 while collecting Fisher statistics")  # fmt: skip
            elif not (target == "full" and type(module) is nn.Linear):
                continue
            self._handles.append(module.register_forward_hook(self._save_input(name, module)))
        if not self._handles:
            raise ValueError(f"no {'LoRALinear' if target == 'lora' else 'trainable nn.Linear'} module in the model")

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """(B, T) padding mask (1 = real token) for the following forward/backward."""
        self._mask = mask

    def _save_input(self, name: str, module: nn.Module):
        """Forward hook: remember this call's input on a gradient hook of this call's output, so
        every call carries its own input (nothing is held for layers the gradient never reaches)."""

        def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
            if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor) or not output.requires_grad:
                return  # below the lowest trained block, or no_grad: no backward will come
            if self._backward_seen:  # the first forward after a backward starts a new batch
                self.scores, self._backward_seen = None, False
                self._called.clear()
            if not self._trainable(module):
                return
            if name in self._called:
                raise ValueError(f"{name} ran twice before a backward: per-sample statistics of a reused "
                                 "module are not supported (run one forward per backward)")  # fmt: skip
            self._called.add(name)
            x = inputs[0].detach()
            output.register_hook(lambda g: self._on_grad(name, module, x, g))

        return hook

    def _trainable(self, module: nn.Module) -> bool:
        if isinstance(module, LoRALinear):
            return bool(not self.only_trainable or module.lora_A.requires_grad or module.lora_B.requires_grad)
        return bool(module.weight.requires_grad)

    def _on_grad(self, name: str, module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
        self._backward_seen = True
        g = grad.detach() * self.grad_scale
        if x.dim() == 2:
            x, g = x[:, None], g[:, None]
        mask = self._mask.to(x.device) if self._mask is not None else None
        if isinstance(module, LoRALinear):
            pairs = lora_inputs(x, g, module.lora_A.detach(), module.lora_B.detach(), module.scale)
            for factor, (inp, gr) in pairs.items():
                self._collect(f"{name}.{factor}", inp, gr, mask)
        else:
            self._collect(f"{name}.weight", x, g, mask)

    def _collect(self, pname: str, x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> None:
        if "trace" in self.stats:
            score = persample_sqnorm(x, g, mask)
            self.scores = score if self.scores is None or self.scores.shape != score.shape else self.scores + score
        if "diag" in self.stats or "rowsum" in self.stats:
            diag = persample_sqgrad(x, g, mask)
            if "diag" in self.stats:
                self.diag[pname] = self.diag[pname] + diag if pname in self.diag else diag
            if "rowsum" in self.stats:
                rows = diag.sum(dim=1)
                self.rowsum[pname] = self.rowsum[pname] + rows if pname in self.rowsum else rows

    def commit(self) -> None:
        """Fold the window's sums into the momentum averages and start a new window."""
        for window, avg in ((self.diag, self.fisher), (self.rowsum, self.fisher_rowsum)):
            for pname, value in window.items():
                if pname in avg:
                    avg[pname].lerp_(value, 1.0 - self.momentum)  # gamma F + (1 - gamma) F_new, fused
                else:
                    avg[pname] = value.clone()
            window.clear()

    def remove(self) -> None:
        """Remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
