"""After a run: save what it trained in the formats the ecosystem loads, then score the saved model.

``export_trained`` writes ``<run>/model/global/`` (every client ends with the same model) or
``<run>/model/client-<k>/``: a peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``,
loadable with ``peft.PeftModel.from_pretrained(base, dir)``) for LoRA, a ``save_pretrained`` folder
(loadable with ``AutoModelForCausalLM.from_pretrained(dir)``) for full-parameter blocks.

``evaluate_exported`` loads each artifact back (not the run's live objects, so the files are what
is measured) and scores it on the client's held-out data against the untouched base: loss in nats
per answer token, and, with ``data.generate`` prompts, ROUGE-L F1 and exact match of greedy answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from fedcore.algorithms import AlgorithmSpec, TrainedModel
from fedcore.algorithms.builders import ClientData, Tokenizer, base_model, client_datasets, model_source, tokenizer_of
from fedcore.data import HFTokenizer
from fedcore.lora import load_adapter, save_adapter
from fedcore.model.pretrained import load_pretrained

MODEL_DIR = "model"


EVAL_BATCH = 8  # held-out examples per forward in the evaluation after the run


def client_shards(spec: AlgorithmSpec, config: Any) -> list[ClientData]:
    """Every client's data as ``spec`` shards it (``spec.client_data``, else the builders')."""
    if spec.client_data is not None:
        return spec.client_data(config)
    return client_datasets(config.data, config.num_clients, EVAL_BATCH, tokenizer_of(config.model))


def artifact_name(trained: TrainedModel, client: int) -> str:
    """``global`` for a model every client shares, else ``client-<k>``."""
    return "global" if trained.shared else f"client-{client}"


def export_trained(config: Any, trained: TrainedModel, run_dir: Path) -> dict[int, Path]:
    """Write every artifact of ``trained`` under ``run_dir/model``; returns client -> its folder."""
    mc = config.model
    tokenizer = tokenizer_of(mc)
    hf_logging.disable_progress_bar()  # save_pretrained's shard bar
    out: dict[int, Path] = {}
    written: dict[str, Path] = {}
    for k in trained.clients:
        name = artifact_name(trained, k)
        if name not in written:
            model = base_model(mc, tokenizer.vocab_size)
            trained.apply(model, k)
            folder = Path(run_dir) / MODEL_DIR / name
            if trained.kind == "lora":
                save_adapter(model, folder, base_model_name_or_path=model_source(mc) if mc.pretrained else None)
            else:
                cast(PreTrainedModel, model).save_pretrained(folder)
                if isinstance(tokenizer, HFTokenizer):
                    tokenizer.hf.save_pretrained(folder)
            written[name] = folder
        out[k] = written[name]
    return out


def load_exported(config: Any, kind: str, folder: Path) -> torch.nn.Module:
    """The model an artifact describes: the base with the adapter loaded, or the saved folder."""
    if kind == "full":  # in the run's dtype and attention, as the base it is compared with
        mc = config.model
        return load_pretrained(str(folder), dtype=mc.dtype, attn_implementation=mc.attn_implementation or None)
    model = base_model(config.model, tokenizer_of(config.model).vocab_size)
    load_adapter(model, folder)
    return model.eval()


@dataclass
class TextEval:
    """One client's held-out scores under the base (``*_before``) and the exported model
    (``*_after``): loss in nats per answer token, ROUGE-L F1 and exact match in [0, 1] over
    ``prompts`` greedy answers (NaN without prompts)."""

    client: int
    loss_before: float
    loss_after: float
    rouge_l_before: float = math.nan
    rouge_l_after: float = math.nan
    exact_before: float = math.nan
    exact_after: float = math.nan
    prompts: int = 0

    def record(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy in nats per answer token over ``batches`` (token-weighted)."""
    total, tokens = 0.0, 0
    for batch in batches:
        n = int((batch["labels"][:, 1:] != -100).sum())
        if n:
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens if tokens else math.nan


def _answers(model: torch.nn.Module, data: ClientData, tokenizer: Tokenizer, max_new_tokens: int) -> list[str]:
    from fedcore.evaluation import greedy_answers

    eos = {tokenizer.eos_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    ids = greedy_answers(
        model,
        [p.ids for p in data.prompts],
        pad_id=tokenizer.pad_id,
        eos_ids=sorted(eos),
        max_new_tokens=max_new_tokens,
    )
    return [tokenizer.decode(a).strip() for a in ids]


def model_scores(model, data: ClientData, tokenizer: Tokenizer, max_new_tokens: int) -> tuple[float, float, float]:
    """Held-out loss (nats per answer token), ROUGE-L and exact match of greedy answers to the
    shard's prompts (NaN without prompts) of a full causal LM."""
    loss = heldout_loss(model, data.eval_batches)
    if not data.prompts:
        return loss, math.nan, math.nan
    from fedcore.evaluation import exact_match, rouge_l

    answers = _answers(model, data, tokenizer, max_new_tokens)
    refs = [p.reference for p in data.prompts]
    return loss, rouge_l(answers, refs), exact_match(answers, refs)


def evaluate_exported(
    config: Any, trained: TrainedModel, artifacts: dict[int, Path], shards: list[ClientData]
) -> list[TextEval]:
    """Every exported client's scores before (the base) and after (its artifact, loaded back)."""
    tokenizer = tokenizer_of(config.model)
    max_new = config.data.max_new_tokens
    base = base_model(config.model, tokenizer.vocab_size).eval()
    before = {k: model_scores(base, shards[k], tokenizer, max_new) for k in artifacts}
    del base
    rows: list[TextEval] = []
    loaded: dict[Path, torch.nn.Module] = {}
    for k, folder in artifacts.items():
        if folder not in loaded:
            loaded.clear()  # one exported model in memory at a time
            loaded[folder] = load_exported(config, trained.kind, folder)
        after = model_scores(loaded[folder], shards[k], tokenizer, max_new)
        b = before[k]
        rows.append(TextEval(k, b[0], after[0], b[1], after[1], b[2], after[2], len(shards[k].prompts)))
    return rows
