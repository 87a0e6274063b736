"""LocalBlockTraining: K steps on one block, parameters restored, the change returned."""

from __future__ import annotations

import pytest
import torch

from fedcore.algorithms.bcd import BCDConfig, bcd_config_from_dict, bcd_config_to_dict, tiny_bcd_config
from fedcore.algorithms.bcd.runner import build_trainer, client_data
from fedcore.config import DataConfig, ModelConfig


def cfg(**kw) -> BCDConfig:
    return tiny_bcd_config(
        model=ModelConfig(hidden_size=32, num_layers=5, num_heads=4, num_kv_heads=2),
        data=DataConfig(train_per_client=16, eval_per_client=8, max_len=32),
        clients=2,
        batch_size=4,
        lr=1e-2,
        **kw,
    )


@pytest.mark.parametrize(("mode", "layers_per_block"), [("full", 2), ("lora", 1)])
def test_train_delta_touches_one_block_and_restores(mode, layers_per_block):
    c = cfg(mode=mode, layers_per_block=layers_per_block)
    trainer = build_trainer(c, 0, client_data(c)[0])
    assert len(trainer.blocks) == -(-5 // layers_per_block)  # the last block is shorter
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    delta, loss = trainer.train_delta(1)
    assert set(delta) == set(trainer.blocks[1]) and loss > 0
    assert all(float(d.abs().max()) > 0 for d in delta.values())
    if mode == "lora":
        assert all("lora" in n for n in delta)
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, before[n]) and not p.requires_grad
    scores = trainer.block_scores()
    assert len(scores) == len(trainer.blocks) and all(s > 0 for s in scores)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_config_roundtrip_and_validation():
    c = cfg(method="fedcybgd")
    assert bcd_config_from_dict(bcd_config_to_dict(c)) == c
    with pytest.raises(ValueError, match="method must be"):
        cfg(method="fedavg")
    with pytest.raises(ValueError, match="staleness > 1"):
        cfg(method="fedbcd", staleness=2)
    with pytest.raises(ValueError, match="participation"):
        cfg(participation=0.0)
    with pytest.raises(ValueError, match="unknown key"):
        bcd_config_from_dict({"rounds": 3, "wat": 1})
    with pytest.raises(ValueError, match="prune must be"):
        bcd_config_from_dict({"compression": {"prune": "random"}})
