"""Clipping bounds every token's (or example's) norm, in torch and in the fused kernel, and the
noise that leaves the client has std z * C."""

from __future__ import annotations

import pytest
import torch

from fedcore.algorithms.split.leakage import client_release
from fedcore.privacy import clip_examples, clip_tokens, gaussian_mechanism

from .conftest import tiny_config


def test_clip_tokens_and_examples_bound_the_norm_and_spare_small_rows():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 33, generator=gen) * torch.rand(3, 7, 1, generator=gen) * 2
    clip = float(h.norm(dim=-1).median())
    rows = clip_tokens(h, clip)
    assert (rows.norm(dim=-1) <= clip * (1 + 1e-6)).all()
    small = h.norm(dim=-1) <= clip
    assert torch.equal(rows[small], h[small])
    big = ~small
    torch.testing.assert_close(rows[big].norm(dim=-1), torch.full((int(big.sum()),), clip))
    per_example = clip_examples(h, 1.0)
    torch.testing.assert_close(per_example.reshape(3, -1).norm(dim=-1), torch.ones(3))
    assert clip_tokens(h.to(torch.bfloat16), clip).dtype == torch.bfloat16


def test_gaussian_mechanism_noise_has_std_z_times_c():
    h = torch.zeros(64, 128, 64)
    out = gaussian_mechanism(h, 0.5, 2.0, "token", generator=torch.Generator().manual_seed(1))
    assert abs(out.std().item() - 1.0) < 0.01  # z * C = 1


@pytest.mark.parametrize("codec", ["raw", "int8+noise"])  # the client's torch pass and the fused kernel
@pytest.mark.parametrize("unit", ["token", "example"])
def test_what_leaves_the_client_is_clipped(codec, unit):
    config = tiny_config(1, codec=codec, clip=0.25, noise_multiplier=1e-9, unit=unit)
    h = torch.randn(2, 9, 64) * 3
    out = client_release(config, 0)(h)
    norms = out.reshape(2, -1).norm(dim=-1) if unit == "example" else out.norm(dim=-1)
    slack = 1e-5 if codec == "raw" else 0.01  # int8 rounding after the clip
    assert (norms <= 0.25 * (1 + slack)).all() and (norms > 0.2).all()


@pytest.mark.parametrize(
    "privacy, message",
    [
        ({"clip": -1.0}, "privacy.clip must be a finite number >= 0"),
        ({"clip": float("inf"), "noise_multiplier": 1.0}, "privacy.clip must be a finite number >= 0"),
        ({"clip": 1.0, "noise_multiplier": -0.5}, "privacy.noise_multiplier must be a finite number >= 0"),
        ({"clip": 1.0}, "clipping alone is not private"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, r"privacy.delta must be in \(0, 1\)"),
        ({"unit": "word"}, "privacy.unit"),
    ],
)
def test_bad_privacy_settings_are_refused_with_one_line(privacy, message):
    from fedcore.algorithms.split.config import config_from_dict

    with pytest.raises(ValueError, match=message):
        config_from_dict({"privacy": privacy, "noise": {"std": 0.0}})


def test_noise_and_the_mechanism_are_not_both_on():
    from fedcore.algorithms.split.config import config_from_dict

    with pytest.raises(ValueError, match="set noise.std = 0"):
        config_from_dict({"privacy": {"clip": 1.0, "noise_multiplier": 1.0}})
    config_from_dict({"privacy": {"clip": 1.0, "noise_multiplier": 1.0}, "noise": {"std": 0.0}})


def test_the_mechanisms_noise_cannot_be_replayed_from_the_config():
    """With [privacy] on, neither the kernel's Philox stream nor the torch pass is seeded from
    train.seed: the same h_A released twice by identically configured clients differs."""
    from fedcore.algorithms.split.noise import HiddenRelease
    from fedcore.algorithms.split.setup import secret_noise, wire_codecs

    config = tiny_config(1, codec="int8+noise", clip=1.0, noise_multiplier=1.0)
    assert secret_noise(config) and wire_codecs(config, 0)[0]["h_A"].seed is None
    h = torch.randn(2, 5, 64)
    a, b = (client_release(config, 0)(h) for _ in range(2))
    assert not torch.equal(a, b)
    release = HiddenRelease(0.5, False, 0.0, "token", secret=True)
    replay = torch.Generator().manual_seed(0)
    assert not torch.equal(release(h, replay), release(h, torch.Generator().manual_seed(0)))
    assert not secret_noise(tiny_config(1, std=0.1, codec="int8+noise"))  # [noise]: reproducible by default
