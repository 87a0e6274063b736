"""The privacy budget of h_A releases under the Gaussian mechanism, from Google's ``dp-accounting``.

A release is one h_A (or eval h_A) of one example leaving its client. With every token (or example)
clipped to L2 norm C and noise of std z * C on every element, one release is the Gaussian mechanism.
Two datasets are neighbours when one token's row (``unit = "token"``) or one example's whole h_A
(``unit = "example"``) is replaced: the L2 sensitivity is 2C, so the library's noise multiplier
(std / sensitivity) is z / 2. The releases of one unit compose (no subsampling amplification: the
data order is a deterministic shuffle, not Poisson sampling).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

ACCOUNTANTS = ("rdp", "pld")


def _library() -> Any:
    try:
        import dp_accounting
    except ImportError as err:
        raise ImportError("privacy accounting needs dp-accounting: pip install 'fedcore[privacy]'") from err
    return dp_accounting


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float, *, accountant: str = "rdp") -> float:
    """epsilon at ``delta`` of ``releases`` compositions of the Gaussian mechanism whose std is
    ``noise_multiplier`` times the L2 sensitivity (the library's convention), by dp-accounting's
    RDP or PLD accountant. ``ValueError`` for a multiplier <= 0, releases < 1, delta outside (0, 1)."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise multiplier must be finite and > 0, got {noise_multiplier!r}")
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
        raise ValueError(f"releases must be an int >= 1, got {releases!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    dpa = _library()
    acc = dpa.rdp.RdpAccountant() if accountant == "rdp" else dpa.pld.PLDAccountant()
    acc.compose(dpa.GaussianDpEvent(noise_multiplier), releases)
    return float(acc.get_epsilon(delta))


@dataclass(frozen=True)
class Guarantee:
    """(epsilon, delta)-DP of the h_A releases, and what it covers.

    ``multiplier``: z (noise std / clip bound); ``releases``: the most times any one unit left its
    client in the run; ``unit``: "token" or "example"; ``covers``: in words."""

    epsilon: float
    delta: float
    multiplier: float
    clip: float
    releases: int
    unit: str
    accountant: str
    covers: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def covers(unit: str, blocks_a: int) -> str:
    """What a guarantee on h_A covers, in words."""
    what = "only h_A (and eval h_A) as it leaves the client; not dh_B, the LoRA uploads or generation"
    if unit == "example":
        return f"each example's whole h_A (replace-one example); {what}"
    if blocks_a == 0:
        return f"each token (its h_A row is a function of that token alone: replace-one token); {what}"
    return (
        f"each h_A row, not each input token: with {blocks_a} client block(s) a token changes every later row, "
        f"so per-token privacy of the text needs unit = 'example'; {what}"
    )


def guarantee(
    clip: float, multiplier: float, releases: int, delta: float, unit: str, blocks_a: int, *, accountant: str = "rdp"
) -> Guarantee:
    """The Guarantee of ``releases`` h_A releases clipped to ``clip`` with noise ``multiplier * clip``
    (replace-one neighbours: the library multiplier is ``multiplier / 2``)."""
    eps = gaussian_epsilon(multiplier / 2, releases, delta, accountant=accountant)
    return Guarantee(eps, delta, multiplier, clip, releases, unit, accountant, covers(unit, blocks_a))


def epoch_releases(steps: int, examples: int, batch_size: int) -> int:
    """The most times one training example is drawn in ``steps`` batches of ``batch_size`` taken
    epoch after epoch from ``examples`` (every epoch sees each example once; the last batch of an
    epoch may be short)."""
    if examples < 1 or steps < 1:
        return 0
    per_epoch = math.ceil(examples / batch_size)
    return math.ceil(steps / per_epoch)
