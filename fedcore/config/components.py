"""The component configs every method composes: model, data, LoRA, train, transport, output.

Keyword-only dataclasses, validated in ``__post_init__`` with a ``ValueError`` that names the key
and what to write instead. Choices are ``Literal`` types; ``tests/config`` checks that they match
what the lower layers accept (``fedcore.model.tiny.FAMILIES``, ``fedcore.data.SKILLS``,
``fedcore.lora.TARGET_ALIASES``), which this module does not import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from .toml import check, check_choices

Family = Literal["llama", "qwen2", "mistral", "gpt2"]
Skill = Literal["add", "subtract", "copy", "reverse", "sort", "recall"]
LoRATarget = Literal["q", "k", "v", "o", "gate", "up", "down"]
FAMILIES: tuple[str, ...] = get_args(Family)
SKILLS: tuple[str, ...] = get_args(Skill)
LORA_TARGETS: tuple[str, ...] = get_args(LoRATarget)


@dataclass(kw_only=True)
class ModelConfig:
    """The random-weight causal LM a run fine-tunes (``fedcore.model.tiny``), built from ``seed``
    identically in every process."""

    family: Family = "llama"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 0  # MLP width; 0: 2 * hidden_size (Llama-3.2-1B: 8192 for hidden 2048)
    vocab_size: int = 0  # embedding and lm_head rows; 0: the tokenizer's (Llama-3.2-1B: 128256)
    # Weight init std. transformers' 0.02 caps a frozen random lm_head's logits near +-2.6 after
    # the final norm (|w| |h| ~ 0.02 sqrt(H) sqrt(H)), so LoRA alone could never fit the task.
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self, "model")
        check(self.num_layers >= 1, f"model.num_layers must be >= 1, got {self.num_layers}")
        check(self.hidden_size % self.num_heads == 0, "model.hidden_size must be a multiple of num_heads")
        check(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be a multiple of num_kv_heads")
        check(self.init_std > 0, f"model.init_std must be > 0, got {self.init_std}")
        check(self.intermediate_size >= 0, f"model.intermediate_size must be >= 0, got {self.intermediate_size}")
        check(self.vocab_size >= 0, f"model.vocab_size must be >= 0 (0: the tokenizer's), got {self.vocab_size}")


@dataclass(kw_only=True)
class DataConfig:
    """The procedurally generated instruction task and how it is spread over clients."""

    train_per_client: int = 256
    eval_per_client: int = 32
    skills: list[str] = field(default_factory=lambda: list(SKILLS))
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    dirichlet_alpha: float = 0.5
    max_len: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        bad = sorted(set(self.skills) - set(SKILLS))
        check(not bad and bool(self.skills), f"data.skills must be a non-empty subset of {SKILLS}, got {bad or '[]'}")
        check_choices(self, "data")
        check(self.dirichlet_alpha > 0, f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        check(self.train_per_client >= 1 and self.eval_per_client >= 1, "data.*_per_client must be >= 1")
        check(self.max_len >= 16, f"data.max_len must be >= 16, got {self.max_len}")


@dataclass(kw_only=True)
class LoRAConfig:
    """LoRA factors in the chosen projections of every trained layer."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        check(self.r >= 1, f"lora.r must be >= 1, got {self.r}")
        check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        bad = sorted(set(self.targets) - set(LORA_TARGETS))
        check(
            not bad and bool(self.targets),
            f"lora.targets must be a non-empty subset of {LORA_TARGETS}, got {bad or '[]'}",
        )


def check_device(device: str, key: str) -> None:
    """``device`` is cpu, cuda or cuda:N (``key`` names it in the error)."""
    check(
        device == "cpu" or device == "cuda" or device.removeprefix("cuda:").isdigit(),
        f"{key} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}",
    )


@dataclass(kw_only=True)
class TrainConfig:
    """Rounds of local training: ``clients`` clients, ``rounds`` rounds of ``local_steps`` steps of
    ``batch_size`` examples at peak learning rate ``lr`` (AdamW)."""

    clients: int = 4
    rounds: int = 8
    local_steps: int = 12
    batch_size: int = 16
    lr: float = 5e-3
    seed: int = 0
    device: str = "cpu"  # where every process keeps its model parts: cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_steps", "batch_size"):
            check(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check_device(self.device, "train.device")


@dataclass(kw_only=True)
class TransportConfig:
    """How server and clients talk. ``zmq``: separate processes over fedcore.transport, CURVE on
    (keys generated for the run by ``fedcore run``; given by hand to ``fedcore serve`` / ``join``);
    ``inprocess``: threads of one process over the same roles."""

    kind: Literal["zmq", "inprocess"] = "zmq"
    curve: bool = True
    bind: str = "tcp://127.0.0.1:0"  # where the server listens (port 0: any free port); `fedcore serve --bind`
    mbps: float = 0.0  # link bandwidth per direction in MB/s; 0 = unshaped
    latency_ms: float = 0.0
    lease_s: float = 30.0  # a peer silent this long is gone: a client is dropped, a client exits
    # A transfer leaves in chunks; on a shaped link each chunk leaves when the link would have
    # carried it, except that an idle link lets ``burst_kib`` out at once (keep it small to model
    # a plain link; chunks much smaller than a transfer let the receiver start on it sooner).
    chunk_kib: int = 8192
    burst_kib: int = 1024

    def __post_init__(self) -> None:
        check_choices(self, "transport")
        check(self.bind.startswith(("tcp://", "ipc://")), f"transport.bind must be tcp://HOST:PORT, got {self.bind!r}")
        check(self.mbps >= 0 and self.latency_ms >= 0, "transport.mbps and transport.latency_ms must be >= 0")
        check(self.lease_s > 0, f"transport.lease_s must be > 0, got {self.lease_s}")
        check(64 <= self.chunk_kib <= 262144, f"transport.chunk_kib must be in [64, 262144], got {self.chunk_kib}")
        check(self.burst_kib >= 1, f"transport.burst_kib must be >= 1, got {self.burst_kib}")


@dataclass(kw_only=True)
class OutputConfig:
    """Where a run writes ``<dir>/<timestamp>/metrics.jsonl``, its plots and its checkpoints.
    ``checkpoint``: a resumable method's server writes ``checkpoint/`` after every round."""

    dir: str = "runs"
    plot: bool = True
    checkpoint: bool = True
