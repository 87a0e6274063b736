"""The noise that actually leaves the client has the configured sigma, fused or in its own pass."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.noise import add_gaussian_noise
from fedcore.algorithms.split.setup import build_client_data, build_split, client_parts, wire_codecs
from fedcore.data import CharTokenizer


def _h_a(config):
    tok = CharTokenizer()
    parts = client_parts(config, build_split(config, tok), 0)
    batch = build_client_data(config, tok)[0].eval_batches[0]
    with torch.no_grad():
        return parts.head(batch["input_ids"], batch["attention_mask"]).hidden


def _sent(codec, hidden):
    hub = InProcessHub()
    server, client = hub.server(), hub.endpoint("c0")
    client.send_to("server", {"hidden": hidden}, codec=codec, tag="h_A")
    return server.recv(5).tensors["hidden"]


@pytest.mark.parametrize("std", [0.3, 1.0])
def test_fused_int8_noise_has_the_configured_relative_sigma(std):
    config = config_from_dict(
        {"model": {"hidden_size": 64}, "noise": {"std": std, "relative": True}, "codecs": {"h_A": "int8+noise"}}
    )
    codecs, separate = wire_codecs(config, 0)
    assert separate == 0.0  # drawn in the packing kernel, not again
    hidden = _h_a(config)
    sigma = std * hidden.abs().mean().item()
    noisy = _sent(codecs["h_A"], hidden) - hidden
    plain = _sent("int8", hidden) - hidden  # the quantization error alone
    measured = (noisy.var() - plain.var()).clamp_min(0).sqrt().item()
    assert abs(measured / sigma - 1) < 0.05, (measured, sigma)


def test_separate_noise_pass_has_the_configured_absolute_sigma():
    config = config_from_dict({"noise": {"std": 0.05, "relative": False}, "codecs": {"h_A": "raw"}})
    _, separate = wire_codecs(config, 0)
    assert separate == 0.05
    hidden = _h_a(config)
    noisy = add_gaussian_noise(hidden, separate, relative=False, generator=torch.Generator().manual_seed(1))
    diff = _sent("raw", noisy) - hidden
    assert abs(diff.std().item() / 0.05 - 1) < 0.03 and abs(diff.mean().item()) < 0.01 * 0.05 * 10
