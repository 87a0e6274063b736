"""FibecFed's formulas against hand computations on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedcore.algorithms.fibecfed import (
    NeuronMask,
    aggregate_layer_scores,
    batches_in_round,
    layer_output_sensitivity,
    neuron_scores,
    order_by_difficulty,
    pace,
    select_global_layers,
    top_neurons,
)
from fedcore.model.tiny import tiny_causal_lm


def test_pace_functions_by_hand():
    # T = 10, alpha = 0.8: x = t / 8
    assert pace(0, 10) == pytest.approx(0.6)
    assert pace(4, 10) == pytest.approx(0.6 + 0.4 * 0.5)
    assert pace(8, 10) == pytest.approx(1.0) and pace(9, 10) == pytest.approx(1.0)
    assert pace(2, 10, kind="sqrt") == pytest.approx(0.6 + 0.4 * 0.5)  # sqrt(0.25)
    assert pace(4, 10, kind="exp") == pytest.approx(0.6 + 0.4 * (math.exp(0.5) - 1) / (math.e - 1))
    assert pace(3, 10, beta=1.0) == 1.0
    with pytest.raises(ValueError, match="pace kind"):
        pace(0, 10, kind="step")
    with pytest.raises(ValueError, match="beta"):
        pace(0, 10, beta=1.5)


def test_batches_per_round_by_hand():
    # n_k = 100, B = 16: 7 batches in all
    assert batches_in_round(0, 10, 100, 16) == 4  # ceil(0.6 * 6.25) = ceil(3.75)
    assert batches_in_round(4, 10, 100, 16) == 5  # 0.8 * 6.25 = 5.0 exactly
    assert batches_in_round(8, 10, 100, 16) == 7  # ceil(6.25), all data
    assert batches_in_round(50, 10, 100, 16) == 7  # clamped
    assert batches_in_round(0, 10, 3, 16) == 1
    with pytest.raises(ValueError):
        batches_in_round(0, 10, 0, 16)


def test_difficulty_order():
    assert order_by_difficulty([3.0, 1.0, 2.0, 1.0]) == [1, 3, 2, 0]


def test_server_layer_scores_and_gal_by_hand():
    agg = aggregate_layer_scores([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])], [1, 3])
    torch.testing.assert_close(agg, torch.tensor([2.5, 5.0]))  # (1*1 + 3*3)/4, (1*2 + 3*6)/4
    scores = torch.tensor([0.1, 0.5, 0.3, 0.5])
    assert select_global_layers(scores, count=2) == [1, 3]  # the tie keeps the lower index first
    assert select_global_layers(scores, ratio=0.75) == [1, 2, 3]
    assert select_global_layers(scores, count=0) == []
    with pytest.raises(ValueError, match="exactly one"):
        select_global_layers(scores)
    with pytest.raises(ValueError, match="count"):
        select_global_layers(scores, count=5)


@pytest.mark.parametrize("p", [2.0, math.inf])
def test_layer_sensitivity_matches_hidden_states_by_hand(p):
    model = tiny_causal_lm("llama", num_layers=3, seed=2)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 128, (2, 9), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    got = layer_output_sensitivity(model, model.model.layers, batch, gamma=0.05, p=p)
    # by hand: the perturbation, then the hidden states transformers returns (layer l's output is
    # hidden_states[l + 1] for every layer but the last, whose entry has the final norm applied)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(inputs_embeds=embeds, labels=ids).loss, embeds)
    delta = 0.05 * g.sign() if p == math.inf else 0.05 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
    with torch.no_grad():
        clean = model(inputs_embeds=embeds, output_hidden_states=True).hidden_states
        moved = model(inputs_embeds=embeds + delta, output_hidden_states=True).hidden_states
    for layer in range(2):
        c, m = clean[layer + 1].norm(), moved[layer + 1].norm()
        assert got[layer].item() == pytest.approx(((m - c).abs() / c).item(), rel=1e-4)
    assert (got > 0).all()
    zero = layer_output_sensitivity(model, model.model.layers, batch, gamma=0.0, p=p)
    assert torch.equal(zero, torch.zeros(3))


def test_neuron_scores_and_selection_by_hand():
    scores = neuron_scores(torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]]))
    torch.testing.assert_close(scores, torch.tensor([3.0, 7.0, 1.0]))
    assert top_neurons(scores, 0.5).tolist() == [True, True, False]  # ceil(1.5) = 2: rows 1 and 0
    assert top_neurons(scores, 0.0).tolist() == [False, False, False]
    assert top_neurons(scores, 1.0).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="rho"):
        top_neurons(scores, 1.5)


def test_masked_rows_do_not_move():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    before = layer.weight.detach().clone()
    mask = NeuronMask(layer, {"weight": torch.tensor([True, False, True])})
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.0)
    NeuronMask.check_optimizer(opt)
    layer(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    assert torch.equal(layer.weight[1], before[1])
    assert not torch.equal(layer.weight[0], before[0]) and not torch.equal(layer.weight[2], before[2])
    mask.remove()
    with pytest.raises(ValueError, match="weight_decay"):
        NeuronMask.check_optimizer(torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.01))
    with pytest.raises(ValueError, match="no such"):
        NeuronMask(layer, {"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool mask"):
        NeuronMask(layer, {"weight": torch.ones(4, dtype=torch.bool)})


def test_eigengap_count_by_hand():
    from fedcore.algorithms.fibecfed.layers import eigengap_count

    # sorted: 0.9, 0.8, 0.3, 0.25 -> gaps 0.1, 0.5, 0.05 -> keep 2
    scores = torch.tensor([0.3, 0.9, 0.25, 0.8])
    assert eigengap_count(scores) == 2
    assert select_global_layers(scores, eigengap=True) == [1, 3]
    assert eigengap_count(torch.tensor([1.0, 1.0, 1.0])) == 1  # no gap: the first k
    with pytest.raises(ValueError, match="exactly one"):
        select_global_layers(scores, ratio=0.5, eigengap=True)
