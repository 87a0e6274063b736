"""``fedcore privacy X.toml``: the privacy-utility study of split learning.

Over Blocks_A x noise (absolute and relative sigma) x the h_A wire codec, every attack is fitted
on a shadow sample of client 0's h_A and scored on the other clients' held-out h_A; with
``utility``, each (Blocks_A, noise) cell is also trained as a split run (in-process) and its
held-out loss and ROUGE-L stand beside the leakage, the attacks then reading the trained head.

The TOML holds a ``[study]`` table and any split run tables ([model], [data], [train], [lora],
[split] ...), which set everything the sweep does not.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from fedcore.algorithms.builders import base_model, tokenizer_of
from fedcore.algorithms.split.config import CodecName, SplitRunConfig, config_from_dict
from fedcore.algorithms.split.leakage import client_release, trained_head
from fedcore.algorithms.split.setup import build_client_data, build_split
from fedcore.config import build_config, check, parse_toml, read_toml
from fedcore.data import batches
from fedcore.model import split_model
from fedcore.privacy.attacks import LinearInverter, NearestRow, RidgeInverter, TransformerInverter, WeightMatch
from fedcore.privacy.capture import HiddenSample, capture
from fedcore.privacy.metrics import leakage_scores

ATTACKS = ("nearest", "least_squares", "ridge", "linear", "transformer", "weights")
STUDY_CODECS = ("raw", "int8")
DEFAULT_STUDY = "privacy.toml"  # in the fedcore.config package data


@dataclass(kw_only=True)
class StudyConfig:
    """The sweep. ``sigma``: absolute noise stds on h_A; ``sigma_relative``: stds relative to
    mean |h_A| (fedcore's [noise] form). ``codecs``: "raw" (noise in its own pass, h_A sent as
    is) or "int8" (noise inside the int8 packing kernel, "int8+noise"). ``shadow_examples`` of
    client 0's training data train each attack; ``victims`` clients (1..victims) are attacked on
    their held-out data. ``utility``: also train each (Blocks_A, noise) cell. ``dp_multipliers``
    add cells with the Gaussian mechanism ([privacy]: per-token L2 clip C, noise z * C); ``dp_clip``
    gives C, one value for every Blocks_A or one per entry of ``blocks_a`` (h_A's norm grows with
    depth)."""

    blocks_a: list[int] = field(default_factory=lambda: [0, 1, 2, 4])
    sigma: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.1, 0.5])
    sigma_relative: list[float] = field(default_factory=lambda: [0.02])
    codecs: list[str] = field(default_factory=lambda: ["int8"])
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    dp_clip: list[float] = field(default_factory=list)
    dp_multipliers: list[float] = field(default_factory=list)
    shadow_examples: int = 128
    victims: int = 2
    utility: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check(bool(self.blocks_a), "study.blocks_a must list at least one head depth")
        check(all(isinstance(b, int) and b >= 0 for b in self.blocks_a), "study.blocks_a must be ints >= 0")
        for name in ("sigma", "sigma_relative"):
            values = getattr(self, name)
            check(
                all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values),
                f"study.{name} must be finite numbers >= 0, got {values}",
            )
        check(bool(self.sigma or self.sigma_relative), "study.sigma or study.sigma_relative must list a noise level")
        bad = [c for c in self.codecs if c not in STUDY_CODECS]
        check(bool(self.codecs) and not bad, f"study.codecs must be a non-empty list of {STUDY_CODECS}, got {bad}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        check(bool(self.attacks) and not bad, f"study.attacks must be a non-empty list of {ATTACKS}, got {bad}")
        zs = self.dp_multipliers
        check(
            all(isinstance(z, int | float) and math.isfinite(z) and z > 0 for z in zs),
            f"study.dp_multipliers must be finite numbers > 0, got {zs}",
        )
        clips = self.dp_clip
        check(
            all(isinstance(c, int | float) and math.isfinite(c) and c > 0 for c in clips),
            f"study.dp_clip must be finite numbers > 0, got {clips}",
        )
        check(
            not zs or len(clips) in (1, len(self.blocks_a)),
            f"study.dp_multipliers needs study.dp_clip: one bound, or one per study.blocks_a ({len(self.blocks_a)})",
        )
        check(self.shadow_examples >= 1, f"study.shadow_examples must be >= 1, got {self.shadow_examples}")
        check(self.victims >= 1, f"study.victims must be >= 1, got {self.victims}")

    def clip_for(self, blocks_a: int) -> float:
        """The Gaussian mechanism's clip bound C at head depth ``blocks_a``."""
        clips = self.dp_clip
        return float(clips[0] if len(clips) == 1 else clips[self.blocks_a.index(blocks_a)])

    def noise_levels(self, blocks_a: int) -> list[tuple[float, bool, float]]:
        """(std, relative, z) of every noise level at ``blocks_a``: absolute, relative, then the
        Gaussian mechanism's (std z * C, z > 0)."""
        levels = [(float(s), False, 0.0) for s in self.sigma]
        levels += [(float(s), True, 0.0) for s in self.sigma_relative if s > 0]
        return levels + [(float(z) * self.clip_for(blocks_a), False, float(z)) for z in self.dp_multipliers]


@dataclass
class Study:
    """A study's sweep and the split run every cell starts from."""

    study: StudyConfig
    base: SplitRunConfig

    def cell(self, blocks_a: int, std: float, relative: bool, codec: str, z: float = 0.0) -> SplitRunConfig:
        """The split config of one cell: in-process, no leakage check, no saved model, no plot;
        ``z`` > 0: the Gaussian mechanism (clip ``study.dp_clip``) instead of [noise]."""
        b = self.base
        h_a: CodecName = ("int8+noise" if std > 0 else "int8") if codec == "int8" else "raw"
        clip = self.study.clip_for(blocks_a) if z > 0 else 0.0
        try:
            return dataclasses.replace(
                b,
                split=dataclasses.replace(b.split, blocks_a=blocks_a),
                noise=dataclasses.replace(b.noise, std=0.0 if z > 0 else std, relative=relative),
                codecs=dataclasses.replace(b.codecs, h_A=h_a),
                privacy=dataclasses.replace(b.privacy, leakage_check=False, clip=clip, noise_multiplier=z),
                transport=dataclasses.replace(b.transport, kind="inprocess", curve=False),
                output=dataclasses.replace(b.output, save_model=False, plot=False),
            )
        except ValueError as err:
            raise ValueError(f"study.blocks_a = {blocks_a}: {err}") from None


def load_study(path: str | Path | None = None) -> Study:
    """A study TOML (``None``: the embedded default, ``fedcore/config/privacy.toml``): ``[study]``
    plus split run tables; ``ValueError`` (one line) for bad keys or values."""
    if path is None:
        text = resources.files("fedcore.config").joinpath(DEFAULT_STUDY).read_text()
        data = parse_toml(text, DEFAULT_STUDY)
    else:
        data = read_toml(path)
    study = build_config(StudyConfig, data.pop("study", {}))
    if data.pop("algorithm", "split") != "split":
        raise ValueError("a privacy study is of split learning: drop algorithm or write algorithm = 'split'")
    base = config_from_dict(data)
    out = Study(study, base)
    for b in study.blocks_a:  # every depth fits the model before anything runs
        out.cell(b, 0.0, False, "raw")
    if base.model.is_pretrained:  # a checkpoint's depth is known once it is loaded
        deepest = max(study.blocks_a)
        try:
            split_model(base_model(base.model, tokenizer_of(base.model).vocab_size), deepest, base.split.blocks_c)
        except ValueError as err:
            raise ValueError(f"study.blocks_a = {deepest}: {err}") from None
    return out


def _attack(name: str, head: torch.nn.Module, ridge: RidgeInverter, max_len: int, seed: int) -> Any:
    embedding: torch.Tensor = head.embed.weight  # type: ignore[union-attr, assignment]  # a SplitHead's
    return {
        "nearest": lambda: NearestRow(embedding),
        "least_squares": lambda: NearestRow(embedding, fit_map=True),
        "ridge": lambda: ridge,
        "linear": lambda: LinearInverter(seed=seed),
        "transformer": lambda: TransformerInverter(seed=seed, max_len=max_len),
        "weights": lambda: WeightMatch(head, ridge),
    }[name]()


@dataclass
class Utility:
    """What a trained cell reached: mean held-out loss (nats/token) over the clients, mean
    ROUGE-L (x100; NaN without prompts), and the trained head."""

    eval_loss: float
    rouge_l: float
    head: torch.nn.Module
    seconds: float


def train_cell(config: SplitRunConfig) -> Utility:
    """Run ``config`` in-process; score the shared trained model on every client's prompts."""
    from .export import model_scores
    from .runner import run

    t0 = time.perf_counter()
    outcome = run(config)
    result, trained = outcome.result, outcome.report.trained
    tokenizer = tokenizer_of(config.model)
    rouge = math.nan
    data = build_client_data(config, tokenizer)
    if trained is not None and any(d.prompts for d in data):
        model = base_model(config.model, tokenizer.vocab_size)
        trained.apply(model, trained.clients[0])
        scores = [model_scores(model.eval(), d, tokenizer, config.data.max_new_tokens)[1] for d in data if d.prompts]
        rouge = 100 * statistics.fmean(scores)
    head = trained_head(config, result.final_lora)
    return Utility(statistics.fmean(result.eval_end), rouge, head, time.perf_counter() - t0)


def cell_epsilon(config: SplitRunConfig) -> float:
    """epsilon at ``privacy.delta`` of a cell's run (its releases as the run would count them)."""
    from fedcore.algorithms.split.spec import run_releases
    from fedcore.privacy.accountant import guarantee

    pc = config.privacy
    sizes = [len(d.train) for d in build_client_data(config, tokenizer_of(config.model))]
    releases = run_releases(config, sizes, evaluations=2)
    return guarantee(pc.clip, pc.noise_multiplier, releases, pc.delta, pc.unit, config.split.blocks_a).epsilon


def _samples(config: SplitRunConfig, head: torch.nn.Module, study: StudyConfig) -> tuple[HiddenSample, list]:
    tokenizer = tokenizer_of(config.model)
    data = build_client_data(config, tokenizer)
    check(len(data) > study.victims, f"study.victims = {study.victims} needs train.clients >= {study.victims + 1}")
    rows = batches(
        data[0].train[: study.shadow_examples], config.train.batch_size, seed=0, pad_id=tokenizer.pad_id, shuffle=False
    )
    shadow = capture(head, rows, release=client_release(config, 0, seed=study.seed + 1))
    victims = [
        capture(head, data[k].eval_batches, release=client_release(config, k, seed=study.seed + 2))
        for k in range(1, study.victims + 1)
    ]
    return shadow, victims


def _joined(samples: list[HiddenSample]) -> HiddenSample:
    width = max(s.ids.shape[1] for s in samples)

    def pad(t: torch.Tensor, value: Any) -> torch.Tensor:
        extra = (t.shape[0], width - t.shape[1], *t.shape[2:])
        return torch.cat([t, torch.full(extra, value, dtype=t.dtype)], 1)

    return HiddenSample(
        torch.cat([pad(s.ids, 0) for s in samples]),
        torch.cat([pad(s.hidden, 0.0) for s in samples]),
        torch.cat([pad(s.mask, False) for s in samples]),
    )


def run_study(study: Study, *, on_row: Callable[[dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
    """Every (Blocks_A, noise, codec, attack) row of the sweep, as it is measured: leakage scores
    (percent), mean |h_A| of the shadow rows, and the cell's utility when ``study.utility``."""
    sc = study.study
    tokenizer = tokenizer_of(study.base.model)
    for blocks_a in sc.blocks_a:
        for std, relative, z in sc.noise_levels(blocks_a):
            utility: Utility | None = None
            for codec in sc.codecs:
                config = study.cell(blocks_a, std, relative, codec, z)
                epsilon = cell_epsilon(config) if z > 0 else None
                if sc.utility and utility is None:
                    utility = train_cell(config)
                head = utility.head if utility is not None else build_split(config, tokenizer).head.eval()
                shadow, victims = _samples(config, head, sc)
                victim = _joined(victims)
                ridge = RidgeInverter().fit(shadow)
                for name in sc.attacks:
                    t0 = time.perf_counter()
                    attack = _attack(name, head, ridge, config.data.max_len, sc.seed)
                    if attack is not ridge:
                        attack.fit(shadow)
                    scores = leakage_scores(attack.predict(victim), victim, tokenizer.decode)
                    row = {
                        "blocks_a": blocks_a,
                        "sigma": std,
                        "relative": relative,
                        "dp_multiplier": z or None,
                        "epsilon": epsilon,
                        "codec": codec,
                        "attack": name,
                        **scores,
                        "mean_abs_h_a": float(shadow.rows()[0].abs().mean()),
                        "shadow_tokens": shadow.tokens,
                        "victim_tokens": victim.tokens,
                        "attack_seconds": time.perf_counter() - t0,
                        "eval_loss": utility.eval_loss if utility else None,
                        "rouge_l_utility": utility.rouge_l if utility else None,
                        "trained": utility is not None,
                    }
                    if on_row is not None:
                        on_row(row)
                    yield row
