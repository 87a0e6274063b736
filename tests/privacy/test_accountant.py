"""The budget comes from dp-accounting, with replace-one sensitivity 2C, and release counts by hand."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from fedcore.privacy import epoch_releases, gaussian_epsilon, guarantee


@pytest.mark.parametrize("z, k", [(0.8, 1), (2.0, 24), (5.0, 300)])
def test_epsilon_is_the_librarys_own(z, k):
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(z), k)
    assert gaussian_epsilon(z, k, 1e-5) == acc.get_epsilon(1e-5)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.GaussianDpEvent(z), k)
    assert gaussian_epsilon(z, k, 1e-5, accountant="pld") == pld.get_epsilon(1e-5)


def test_rdp_epsilon_is_below_the_classic_conversion_by_hand():
    """k Gaussian releases of multiplier s have RDP k*a/(2 s^2); eps <= min_a RDP + log(1/delta)/(a-1)."""
    s, k, delta = 3.0, 10, 1e-5
    classic = min(k * a / (2 * s * s) + math.log(1 / delta) / (a - 1) for a in [1 + i / 10 for i in range(1, 2000)])
    got = gaussian_epsilon(s, k, delta)
    assert 0.5 * classic < got <= classic


def test_a_guarantee_uses_replace_one_sensitivity_and_says_what_it_covers():
    g = guarantee(1.0, 4.0, 12, 1e-5, "token", 1)
    assert g.epsilon == gaussian_epsilon(2.0, 12, 1e-5)  # noise z*C over sensitivity 2C
    assert "not each input token" in g.covers and "not dh_B" in g.covers
    assert "replace-one token" in guarantee(1.0, 4.0, 12, 1e-5, "token", 0).covers
    assert "whole h_A" in guarantee(1.0, 4.0, 12, 1e-5, "example", 2).covers
    assert guarantee(1.0, 8.0, 12, 1e-5, "token", 0).epsilon < g.epsilon


def test_release_counts():
    assert epoch_releases(steps=96, examples=256, batch_size=16) == 6  # 16 batches an epoch
    assert epoch_releases(steps=17, examples=250, batch_size=16) == 2  # 16 batches (last one short)
    assert epoch_releases(steps=1, examples=5, batch_size=16) == 1


@pytest.mark.parametrize("z, k, delta", [(0.0, 1, 1e-5), (1.0, 0, 1e-5), (1.0, 1, 0.0), (float("nan"), 1, 1e-5)])
def test_bad_accounting_arguments(z, k, delta):
    with pytest.raises(ValueError):
        gaussian_epsilon(z, k, delta)
