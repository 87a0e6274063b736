"""FedCyBGD's download compression: pruning operators, payload plan, mirror == client."""

from __future__ import annotations

import random

import pytest
import torch

from fedcore.algorithms.bcd import CompressionConfig, apply_download, encode_download, prune_magnitude, prune_rows


@pytest.mark.parametrize("shape", [(7,), (5, 13), (3, 4, 6)])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
def test_prune_magnitude_keeps_the_largest_entries(shape, ratio):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    idx, val = prune_magnitude(x, ratio)
    keep = max(1, -(-int((1 - ratio) * x.numel() * 1000) // 1000))
    assert idx.dtype == torch.int32 and idx.numel() == val.numel() == keep
    assert bool((idx[1:] > idx[:-1]).all())
    torch.testing.assert_close(val, x.reshape(-1)[idx.long()])
    dropped = torch.ones(x.numel(), dtype=torch.bool)
    dropped[idx.long()] = False
    if dropped.any():
        assert x.reshape(-1).abs()[dropped].max() <= val.abs().min()


def test_prune_rows_keeps_the_largest_rows():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(2))
    idx, rows = prune_rows(x, 0.6)
    assert idx.tolist() == sorted(x.norm(dim=1).topk(4).indices.tolist())
    torch.testing.assert_close(rows, x[idx.long()])
    idx1, rows1 = prune_rows(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5)  # 1-D: rows are entries
    assert idx1.tolist() == [1, 2] and rows1.reshape(-1).tolist() == [-3.0, 2.0]


def _model(seed: int, blocks: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"b{b}.{k}": torch.randn(4, 3, generator=g) for b in range(blocks) for k in ("w", "v")}


BLOCKS = [[f"b{b}.w", f"b{b}.v"] for b in range(6)]


@pytest.mark.parametrize("prune", ["magnitude", "structured"])
def test_payload_kinds_and_the_mirror_stays_equal_to_the_client(prune):
    global_params = _model(0)
    client = _model(1)
    client["b5.w"] = global_params["b5.w"].clone()  # unchanged block: not sent at all
    client["b5.v"] = global_params["b5.v"].clone()
    mirror = {k: v.clone() for k, v in client.items()}
    config = CompressionConfig(enabled=True, drop_ratio=0.5, prune=prune, prune_ratio=0.5)
    tensors, kinds = encode_download(global_params, mirror, BLOCKS, 2, {0, 1}, config, random.Random(0))
    assert set(kinds["whole"]) >= {"b2.w", "b2.v"}  # the responsible block, whole
    pruned = kinds["sparse" if prune == "magnitude" else "rows"]
    assert set(pruned) == {"b0.w", "b0.v", "b1.w", "b1.v"}  # updated this round: pruned change
    stale = {3, 4}  # changed, not yet updated this round: one of the two dropped (ratio 0.5)
    dropped_blocks = {int(n[1]) for n in kinds["dropped"]}
    assert len(dropped_blocks) == 1 and dropped_blocks <= stale
    assert not any(n.startswith("b5") for names in kinds.values() for n in names)
    apply_download(client, tensors, kinds)
    apply_download(mirror, tensors, kinds)
    for k in client:
        assert torch.equal(client[k], mirror[k])
    torch.testing.assert_close(client["b2.w"], global_params["b2.w"], rtol=0, atol=0)
    for n in pruned:  # the pruned change moved the copy toward the global value
        before = (_model(1)[n] - global_params[n]).norm()
        assert (client[n] - global_params[n]).norm() < before


def test_uncompressed_sends_every_changed_block_whole_and_is_exact():
    global_params, client = _model(0), _model(1)
    tensors, kinds = encode_download(
        global_params, client, BLOCKS, 0, {1}, CompressionConfig(enabled=False), random.Random(0)
    )
    assert len(kinds["whole"]) == 12 and not kinds["sparse"] and not kinds["dropped"]
    apply_download(client, tensors, kinds)
    for k in client:
        assert torch.equal(client[k], global_params[k])


def test_bad_payload_is_refused():
    params = _model(0)
    with pytest.raises(ValueError, match="unknown parameter"):
        apply_download(params, {"nope": torch.zeros(1)}, {"whole": ["nope"]})
    with pytest.raises(ValueError, match="shape"):
        apply_download(params, {"b0.w": torch.zeros(2)}, {"whole": ["b0.w"]})
    with pytest.raises(ValueError, match="out of range"):
        apply_download(
            params, {"b0.w|idx": torch.tensor([99], dtype=torch.int32), "b0.w|val": torch.ones(1)}, {"sparse": ["b0.w"]}
        )


def test_payload_missing_tensors_is_refused():
    params = _model(0)
    with pytest.raises(ValueError, match="lacks"):
        apply_download(params, {}, {"whole": ["b0.w"]})
    with pytest.raises(ValueError, match="lacks"):
        apply_download(params, {"b0.w|idx": torch.tensor([0], dtype=torch.int32)}, {"sparse": ["b0.w"]})
    with pytest.raises(ValueError, match="kinds"):
        apply_download(params, {}, {"whole": "b0.w"})
