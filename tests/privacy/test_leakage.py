"""Every split run reports its leakage, and with [privacy] on its (epsilon, delta) by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fedcore.privacy import check_clip, gaussian_epsilon
from fedcore.runtime.runner import run_threads

from .conftest import tiny_config


def test_a_run_with_the_gaussian_mechanism_reports_its_budget_and_leakage():
    config = tiny_config(1, codec="int8+noise", clip=8.0, noise_multiplier=2.0)
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, clients=2, rounds=2, local_steps=5, batch_size=16),
        transport=dataclasses.replace(config.transport, kind="inprocess"),
        output=dataclasses.replace(config.output, save_model=False),
    )
    outcome = run_threads(config)
    summary = outcome.report.summary
    sizes = outcome.result.client_sizes
    # 10 batches of 16 per client; a shard of n examples is one epoch per ceil(n / 16) batches
    releases = max(max(math.ceil(10 / math.ceil(n / 16)) for n in sizes), 2)
    dp = summary["privacy"]
    assert dp["releases"] == releases and dp["unit"] == "token" and dp["clip"] == 8.0
    assert dp["epsilon"] == gaussian_epsilon(1.0, releases, 1e-5)  # z * C over sensitivity 2C
    leak = summary["leakage"]
    assert leak["victims"] == [1] and 0 <= leak["token_recovery"] <= 100 and leak["shadow_tokens"] > 0
    rows = {r[0].split(" (")[0]: r[1] for r in outcome.report.tables[-1].rows}
    assert any("DP over" in v for v in rows.values())
    assert all(math.isfinite(x) for x in summary["eval_loss_end"])


def test_check_clip_refuses_a_bound_or_multiplier_that_is_not_positive():
    for clip, z in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (float("inf"), 1.0)):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            check_clip(clip, z)
    check_clip(1, 0.5)
