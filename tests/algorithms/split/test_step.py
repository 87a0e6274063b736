"""The split step's hand-offs: gradients equal centralised training, bytes are counted, noise."""

from __future__ import annotations

import copy

import pytest
import torch

from fedcore.accounting import ByteMeter
from fedcore.algorithms.split import ClientParts, ServerParts, add_gaussian_noise, split_train_step
from fedcore.lora import inject_lora, lora_parameters
from fedcore.model import split_model
from fedcore.model.tiny import tiny_causal_lm


def _sgd(params):
    opt = torch.optim.SGD(params, lr=0.1)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def test_split_step_equals_one_centralised_sgd_step():
    torch.manual_seed(0)
    model = tiny_causal_lm("llama", num_layers=4)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_lora(model.model.layers, targets=["q", "v", "up"], r=4, alpha=8)
    for p in lora_parameters(model).values():
        torch.nn.init.normal_(p, std=0.1)  # non-zero B so every factor gets a gradient
    reference = copy.deepcopy(model)

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (4, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    sm = split_model(model, 1, 1)
    c_opt, c_sched = _sgd([*lora_parameters(sm.head).values(), *lora_parameters(sm.tail).values()])
    s_opt, s_sched = _sgd(lora_parameters(sm.body).values())
    client = ClientParts(sm.head, sm.tail, c_opt, c_sched, torch.Generator())
    server = ServerParts(sm.body, s_opt, s_sched)
    meter = ByteMeter()
    loss = split_train_step(client, server, batch, noise_std=0.0, noise_relative=True, meter=meter)

    ref_opt = torch.optim.SGD(lora_parameters(reference).values(), lr=0.1)
    ref_loss = reference(**batch).loss
    ref_loss.backward()
    ref_opt.step()
    assert loss == pytest.approx(float(ref_loss.detach()), abs=1e-6)
    ref_params = lora_parameters(reference)
    for name, p in lora_parameters(model).items():
        torch.testing.assert_close(p, ref_params[name], rtol=0, atol=1e-6, msg=name)

    hidden_bytes = 4 * 10 * model.config.hidden_size * 4
    meta = 10 * 8 + 4 * 10  # position_ids int64 (1, T) (shared by rows) + attention_mask bool (B, T)
    assert meter.bytes == {
        "h_A": hidden_bytes + meta,
        "h_B": hidden_bytes + meta,
        "dh_B": hidden_bytes,
        "dh_A": hidden_bytes,
    }


def test_relative_noise_scale_and_reproducibility():
    h = torch.randn(64, 33, 96, dtype=torch.float64) * 0.02
    a = add_gaussian_noise(h, 0.5, relative=True, generator=torch.Generator().manual_seed(3))
    b = add_gaussian_noise(h, 0.5, relative=True, generator=torch.Generator().manual_seed(3))
    c = add_gaussian_noise(h, 0.5, relative=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    sigma = float((a - h).std())
    assert sigma == pytest.approx(0.5 * float(h.abs().mean()), rel=0.02)
    absolute = add_gaussian_noise(h, 0.3, relative=False, generator=torch.Generator().manual_seed(3))
    assert float((absolute - h).std()) == pytest.approx(0.3, rel=0.02)
    assert add_gaussian_noise(h, 0.0, relative=True) is h
    with pytest.raises(ValueError):
        add_gaussian_noise(h, -1.0, relative=True)
