"""FedCyBGD end to end on the tiny model (in-process): cyclic turns, upload = one block,
compressed download cheaper than uncompressed, mirrors equal to the clients' models."""

from __future__ import annotations

import torch

from fedcore.algorithms.bcd import BCDConfig, CompressionConfig, responsible_blocks, run_bcd
from fedcore.runtime.config import DataConfig, ModelConfig


def config(**kw) -> BCDConfig:
    base = dict(
        method="fedcybgd",
        model=ModelConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2),
        data=DataConfig(train_per_client=24, eval_per_client=8, dirichlet_alpha=0.1, max_len=32),
        clients=4,
        rounds=3,
        local_steps=2,
        batch_size=8,
        lr=3e-3,
        round_timeout_s=60.0,
    )
    base.update(kw)
    return BCDConfig(**base)


def test_responsible_blocks_cover_the_blocks():
    pi = responsible_blocks(4, 4, seed=0)
    assert sorted(pi) == [0, 1, 2, 3]
    shared = responsible_blocks(6, 4, seed=0)
    assert sorted(set(shared)) == [0, 1, 2, 3] and shared[:4] == pi


def test_fedcybgd_uploads_one_block_per_turn_and_learns():
    clients: list = []
    result = run_bcd(config(), clients=clients)
    block_bytes = sum(p.numel() * 4 for n, p in result.final_params.items() if n.startswith("model.layers.0."))
    for r in result.records:
        assert sorted(r.included) == [0, 1, 2, 3]
        assert r.up_bytes == 4 * block_bytes  # each client uploads exactly its block's change
    assert result.wire["received"]["delta_up"] == result.upload_bytes
    assert result.records[-1].train_loss < result.records[0].train_loss
    for c in clients:  # after the final refresh every client holds the global model
        for n, p in result.final_params.items():
            assert torch.equal(c.trainer.params[n], p)


def test_compressed_download_is_smaller():
    plain = run_bcd(config())
    packed = run_bcd(config(compression=CompressionConfig(enabled=True, drop_ratio=0.5, prune_ratio=0.75)))
    assert packed.download_bytes < 0.8 * plain.download_bytes
    assert packed.wire["sent"]["model_down"] == packed.download_bytes
    assert packed.upload_bytes == plain.upload_bytes
