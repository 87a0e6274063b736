"""Attacks that read tokens back from h_A, each fitted on shadow data (FL-GLM's collusion: a client
hands the server its own text) and applied to other clients' h_A.

- ``NearestRow``: learning-free. The nearest embedding row to each h_A row (embedding-only
  splits), or to its least-squares map into the embedding space (``fit_map=True``). Needs the
  client's embedding matrix: a server that knows the base weights.
- ``RidgeInverter``: a linear map from h_A to one-hot tokens, solved in closed form (seconds,
  the end-of-run leakage check).
- ``LinearInverter``: FL-GLM's linear F^-1, softmax regression trained with Adam.
- ``TransformerInverter``: FL-GLM's one-block transformer F^-1.
- ``WeightMatch``: knows the client's head. Left to right, it tries each position's top-k
  candidates from a fitted inverter and keeps the one whose recomputed h_A row is nearest to the
  observed one (the maximum-likelihood choice under Gaussian noise).

Learned inverters predict only tokens seen in the shadow data (a classifier has no evidence for
the others). Every attack returns predicted ids (N, T) int64; padding positions are arbitrary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .capture import HiddenSample

ROW_CHUNK = 4096  # h_A rows scored at once against every class


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones_like(mean)
    return mean, std


class _Classes:
    """The shadow data's token ids as classes 0..C-1."""

    def __init__(self, ids: torch.Tensor):
        self.ids = torch.unique(ids)
        self.index = {int(t): i for i, t in enumerate(self.ids)}

    def of(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.index[int(t)] for t in ids], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)


def _scored(sample: HiddenSample, score: Callable[[torch.Tensor], torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
    """Predicted ids (N, T): ``classes[argmax score(rows)]`` on every position, in row chunks."""
    flat = sample.hidden.reshape(-1, sample.hidden.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.long)
    for start in range(0, flat.shape[0], ROW_CHUNK):
        out[start : start + ROW_CHUNK] = classes[score(flat[start : start + ROW_CHUNK]).argmax(-1)]
    return out.reshape(sample.ids.shape)


class NearestRow:
    """Nearest embedding row (L2) to each h_A row, or to its least-squares image in the embedding
    space (``fit_map``: a linear map with bias fitted on the shadow rows to their tokens' rows)."""

    def __init__(self, embedding: torch.Tensor, *, fit_map: bool = False):
        self.embedding = embedding.detach().float().cpu()
        self.fit_map = fit_map
        self.name = "least squares + nearest row" if fit_map else "nearest row"
        self.map: torch.Tensor | None = None

    def fit(self, shadow: HiddenSample) -> NearestRow:
        if self.fit_map:
            x, ids = shadow.rows()
            x1 = torch.cat([x, torch.ones(len(x), 1)], 1).double()
            target = self.embedding[ids].double()
            ridge = 1e-6 * torch.eye(x1.shape[1], dtype=torch.float64) * x1.square().mean()
            self.map = torch.linalg.solve(x1.T @ x1 + ridge, x1.T @ target).float()
        return self

    def predict(self, sample: HiddenSample) -> torch.Tensor:
        e = self.embedding
        sq = e.square().sum(1)

        def score(rows: torch.Tensor) -> torch.Tensor:
            if self.map is not None:
                rows = torch.cat([rows, torch.ones(len(rows), 1)], 1) @ self.map
            return 2 * rows @ e.T - sq  # = ||r||^2 - ||r - e||^2: the largest is the nearest row

        return _scored(sample, score, torch.arange(len(e)))


class RidgeInverter:
    """h_A row -> token by ridge regression onto one-hot classes (closed form, standardized
    inputs, penalty ``ridge`` times the mean feature variance)."""

    name = "linear (ridge)"

    def __init__(self, ridge: float = 1e-3):
        self.ridge = ridge

    def fit(self, shadow: HiddenSample) -> RidgeInverter:
        x, ids = shadow.rows()
        self.classes = _Classes(ids)
        self.mean, self.std = _standardizer(x)
        z = torch.cat([(x - self.mean) / self.std, torch.ones(len(x), 1)], 1).double()
        xty = torch.zeros(z.shape[1], len(self.classes), dtype=torch.float64)
        xty.index_add_(1, self.classes.of(ids), z.T)  # X^T Y for one-hot Y without building Y
        gram = z.T @ z + self.ridge * len(z) * torch.eye(z.shape[1], dtype=torch.float64)
        self.weight = torch.linalg.solve(gram, xty).float()
        return self

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        z = torch.cat([(rows - self.mean) / self.std, torch.ones(len(rows), 1)], 1)
        return z @ self.weight

    def predict(self, sample: HiddenSample) -> torch.Tensor:
        return _scored(sample, self.logits, self.classes.ids)


def _train(model: nn.Module, batches: Callable[[torch.Generator], list], epochs: int, lr: float, seed: int) -> None:
    """Adam on cross-entropy (targets -100 ignored) over ``batches(gen)`` (fresh order per epoch)
    for ``epochs``; logits (..., C) and targets (...) are flattened."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for inputs, target in batches(gen):
            logits = model(*inputs)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


class LinearInverter:
    """FL-GLM's linear F^-1: softmax regression h_A row -> token, Adam on cross-entropy."""

    name = "linear (trained)"

    def __init__(self, *, epochs: int = 30, lr: float = 3e-3, batch_rows: int = 512, seed: int = 0):
        self.epochs, self.lr, self.batch_rows, self.seed = epochs, lr, batch_rows, seed

    def fit(self, shadow: HiddenSample) -> LinearInverter:
        x, ids = shadow.rows()
        self.classes = _Classes(ids)
        self.mean, self.std = _standardizer(x)
        z, y = (x - self.mean) / self.std, self.classes.of(ids)
        self.model = nn.Linear(x.shape[1], len(self.classes))

        def batches(gen: torch.Generator) -> list:
            order = torch.randperm(len(z), generator=gen)
            return [((z[i],), y[i]) for i in order.split(self.batch_rows)]

        _train(self.model, batches, self.epochs, self.lr, self.seed)
        return self

    @torch.no_grad()
    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model((rows - self.mean) / self.std)

    def predict(self, sample: HiddenSample) -> torch.Tensor:
        return _scored(sample, self.logits, self.classes.ids)


class _SequenceInverter(nn.Module):
    def __init__(self, hidden: int, width: int, classes: int, heads: int, max_len: int):
        super().__init__()
        self.inp = nn.Linear(hidden, width)
        self.pos = nn.Embedding(max_len, width)
        self.block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.out = nn.Linear(width, classes)

    def forward(self, hidden: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        x = self.inp(hidden) + self.pos(positions)
        return self.out(self.block(x, src_key_padding_mask=pad))


class TransformerInverter:
    """FL-GLM's one-block transformer F^-1: h_A (N, T, H) -> tokens, one bidirectional
    transformer layer of ``width`` over the sequence, Adam on cross-entropy."""

    name = "transformer (1 block)"

    def __init__(self, *, width: int = 128, heads: int = 4, epochs: int = 40, lr: float = 1e-3, batch: int = 16,
                 seed: int = 0, max_len: int = 0):  # fmt: skip
        self.width, self.heads, self.epochs, self.lr, self.batch, self.seed = width, heads, epochs, lr, batch, seed
        self.max_len = max_len  # positions the inverter knows (at least the shadow data's length)

    def fit(self, shadow: HiddenSample) -> TransformerInverter:
        _, ids = shadow.rows()
        self.classes = _Classes(ids)
        x = shadow.hidden[shadow.mask]
        self.mean, self.std = _standardizer(x)
        torch.manual_seed(self.seed)
        positions = max(self.max_len, shadow.ids.shape[1])
        self.model = _SequenceInverter(x.shape[1], self.width, len(self.classes), self.heads, positions)
        z = (shadow.hidden - self.mean) / self.std
        target = torch.full(shadow.ids.shape, -100, dtype=torch.long)
        target[shadow.mask] = self.classes.of(shadow.ids[shadow.mask])

        def batches(gen: torch.Generator) -> list:
            order = torch.randperm(len(z), generator=gen)
            return [((z[i], ~shadow.mask[i]), target[i]) for i in order.split(self.batch)]

        _train(self.model, batches, self.epochs, self.lr, self.seed)
        return self

    @torch.no_grad()
    def predict(self, sample: HiddenSample) -> torch.Tensor:
        width = self.model.pos.num_embeddings
        if sample.ids.shape[1] > width:
            raise ValueError(f"sequences of {sample.ids.shape[1]} tokens; this inverter was fitted on <= {width}")
        logits = self.model((sample.hidden - self.mean) / self.std, ~sample.mask)
        return self.classes.ids[logits.argmax(-1)]


class WeightMatch:
    """Knows the client's head (its weights and LoRA): position by position, left to right, tries
    the ``top_k`` candidates of ``guide`` (a fitted RidgeInverter or LinearInverter) after the
    tokens already recovered and keeps the candidate whose recomputed h_A row is nearest (L2) to
    the observed row."""

    name = "weight match (knows the head)"

    def __init__(self, head: nn.Module, guide: RidgeInverter | LinearInverter, *, top_k: int = 16):
        self.head, self.guide, self.top_k = head, guide, top_k

    def fit(self, shadow: HiddenSample) -> WeightMatch:
        return self  # the guide is fitted by the caller; the head needs no fitting

    @torch.no_grad()
    def predict(self, sample: HiddenSample) -> torch.Tensor:
        device = next(iter(self.head.parameters())).device
        out = self.guide.predict(sample).clone()
        k = min(self.top_k, len(self.guide.classes))
        for n in range(len(sample)):
            length = int(sample.mask[n].sum())
            rows = sample.hidden[n, :length]
            top = self.guide.classes.ids[self.guide.logits(rows).topk(k, dim=-1).indices]  # (T, k)
            seq = torch.empty(length, dtype=torch.long)
            for t in range(length):
                cands = torch.cat([seq[:t].expand(k, t), top[t][:, None]], 1).to(device)
                h = self.head(cands, torch.ones_like(cands)).hidden[:, t].float().cpu()
                seq[t] = top[t][(h - rows[t]).square().sum(-1).argmin()]
            out[n, :length] = seq
        return out
