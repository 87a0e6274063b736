"""FedCyBGD end to end on the tiny model (in-process): cyclic turns, upload = one block,
compressed download cheaper than uncompressed, mirrors equal to the clients' models."""

from __future__ import annotations

import torch

from fedcore.algorithms.bcd import BCDConfig, CompressionConfig, responsible_blocks, run_bcd, tiny_bcd_config


def config(**kw) -> BCDConfig:
    return tiny_bcd_config(**{"method": "fedcybgd", "clients": 4, **kw})


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
