"""The FibecFed simulation's mechanics on a tiny setup: GAL-only uplink, FedIT as every layer,
curriculum batch counts, masked rows frozen, and the ablation switches."""

from __future__ import annotations

import pytest

from fedcore.algorithms.fibecfed import FibecFedConfig, run_fibecfed
from fedcore.config import ModelConfig

TINY = dict(clients=4, per_round=2, rounds=2, samples_per_client=10, eval_clients=2,
            model=ModelConfig(hidden_size=32, num_layers=4), lora_r=4, batch_size=16)  # fmt: skip


def test_fibecfed_uploads_only_the_global_layers():
    fib = run_fibecfed(FibecFedConfig(method="fibecfed", gal_ratio=0.75, **TINY))
    fedit = run_fibecfed(FibecFedConfig(method="fedit", **TINY))
    assert len(fib.global_layers) == 3 and fedit.global_layers == [0, 1, 2, 3]
    assert fib.extra["gal_names"] * 4 == fedit.extra["gal_names"] * 3  # q and v LoRA of 3 of 4 layers
    # the same clients are sampled (same seed), so uplink scales with the GAL fraction exactly
    assert [b * 4 for b in fib.uplink_bytes] == [b * 3 for b in fedit.uplink_bytes]
    assert fib.init_seconds > 0.0 and fedit.init_seconds < 0.05  # FedIT has no initialization phase
    for r in (fib, fedit):
        assert len(r.accuracy) == len(r.token_accuracy) == len(r.eval_loss) == 2
        assert all(0.0 <= a <= 1.0 for a in r.token_accuracy)


@pytest.mark.parametrize("switch", [{"curriculum": False}, {"gal_ratio": 1.0}, {"neuron_selection": False}])
def test_ablations_run(switch):
    r = run_fibecfed(FibecFedConfig(**{**TINY, **switch, "rounds": 1, "clients": 3}))
    assert len(r.eval_loss) == 1 and r.eval_loss[0] > 0


def test_bad_config():
    with pytest.raises(ValueError, match="method"):
        FibecFedConfig(method="fedavg")
    with pytest.raises(ValueError, match="per_round"):
        FibecFedConfig(clients=3, per_round=5)
