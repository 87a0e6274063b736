"""Every method runs on every family ``split_model`` supports (tiny random models, in-process):
the run finishes with finite losses, the saved model loads back as the model ``TrainedModel``
rebuilds, and that model scores on the held-out data what the method itself measured at its end
(so the export is what was trained, not just a round trip)."""

from __future__ import annotations

import math

import pytest
import torch

from fedcore.algorithms import get_algorithm
from fedcore.algorithms.builders import base_model, tokenizer_of
from fedcore.model.tiny import FAMILIES
from fedcore.runtime import run_threads
from fedcore.runtime.export import client_shards, evaluate_exported, export_trained, load_exported

from ..runtime.conftest import TINY

NEW_FAMILIES = ("gemma2", "gemma3", "gpt_neox", "falcon")


def tiny_config(algorithm: str, family: str):
    tables = {k: v for k, v in TINY[algorithm].items()}
    model = dict(tables["model"], family=family)
    if family == "gpt_neox":
        model["num_kv_heads"] = model["num_heads"]  # no grouped-query attention
    tables["model"] = model
    tables["transport"] = {"kind": "inprocess"}
    return get_algorithm(algorithm).config_from_dict(tables)


def test_the_new_families_are_known():
    assert set(NEW_FAMILIES) <= set(FAMILIES)


@pytest.mark.slow
@pytest.mark.parametrize("family", NEW_FAMILIES)
@pytest.mark.parametrize("algorithm", sorted(TINY))
def test_every_method_runs_on_every_family(tmp_path, algorithm, family):
    config = tiny_config(algorithm, family)
    outcome = run_threads(config)
    assert outcome.report.losses and all(math.isfinite(x) for x in outcome.report.losses), outcome.report.losses
    trained = outcome.report.trained
    assert trained is not None and trained.clients
    k = trained.clients[0]
    folder = export_trained(config, trained, tmp_path)[k]
    live = base_model(config.model, tokenizer_of(config.model).vocab_size)
    trained.apply(live, k)
    ids = torch.randint(4, 90, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(load_exported(config, trained.kind, folder)(input_ids=ids).logits,
                                   live.eval()(input_ids=ids).logits)  # fmt: skip
        untouched = base_model(config.model, tokenizer_of(config.model).vocab_size).eval()(input_ids=ids).logits
    assert not torch.equal(untouched, live(input_ids=ids).logits), "the run trained nothing"


def own_end_losses(algorithm: str, report) -> list[float]:
    """The method's own held-out loss per client at the end of its run."""
    if algorithm in ("fedbcd", "parablock", "fedcybgd"):
        return list(report.summary["eval_loss"])
    return list(report.summary["eval_loss_end"])


def answer_tokens(batches) -> int:
    return sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(TINY))
def test_the_exported_model_scores_what_the_method_measured(tmp_path, algorithm):
    config = tiny_config(algorithm, "llama")
    outcome = run_threads(config)
    trained = outcome.report.trained
    shards = client_shards(get_algorithm(algorithm), config)
    rows = evaluate_exported(config, trained, export_trained(config, trained, tmp_path), shards)
    if algorithm == "fibecfed":  # one number per round: the evaluated clients' token-weighted loss
        tokens = [answer_tokens(shards[r.client].eval_batches) for r in rows]
        mean = sum(r.loss_after * n for r, n in zip(rows, tokens, strict=True)) / sum(tokens)
        assert mean == pytest.approx(outcome.report.losses[-1], rel=1e-5)
        return
    own = own_end_losses(algorithm, outcome.report)
    # split's own evaluation runs through the wire codecs (int8 + noise on h_A, int8 h_B)
    rel = 5e-2 if algorithm == "split" else 1e-5
    for r in rows:
        assert r.loss_after == pytest.approx(own[r.client], rel=rel), (r, own)
        assert r.loss_after < r.loss_before
