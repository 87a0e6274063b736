"""Timeline: records, wire round trip, overlap measure, Gantt PNG of a real ParaBlock run."""

from __future__ import annotations

import pytest

from fedcore.algorithms.bcd import Timeline, overlap_seconds, plot_timeline, run_bcd, tiny_bcd_config
from fedcore.algorithms.bcd.timeline import Interval, timeline_records, timeline_tensor


def test_wire_roundtrip_and_overlap():
    tl = Timeline()
    tl.add(Interval("client 0", "compute", 0, 10.0, 12.0))
    tl.add(Interval("client 0", "comm", 0, 11.0, 14.0))
    tl.add(Interval("client 0", "compute", 1, 14.0, 15.0))
    recs = tl.to_records()
    assert timeline_records(timeline_tensor(recs), "client 0") == recs
    assert overlap_seconds(recs, "client 0", "compute", "comm") == pytest.approx(1.0)
    assert tl.total("client 0", "compute") == pytest.approx(3.0)
    with pytest.raises(ValueError, match="kind"):
        tl.add(Interval("x", "nap", 0, 0.0, 1.0))


def test_parablock_run_overlaps_and_plots(tmp_path):
    config = tiny_bcd_config(method="parablock", clients=2)
    result = run_bcd(config)
    kinds = {(r["who"], r["kind"]) for r in result.timeline}
    assert {("client 0", "compute"), ("client 0", "comm"), ("server", "aggregate")} <= kinds
    # rounds 1.. ship the previous update while computing: the two threads overlap in time
    assert overlap_seconds(result.timeline, "client 0", "compute", "comm") > 0
    plot_timeline(result.timeline, tmp_path / "gantt.png")
    assert (tmp_path / "gantt.png").stat().st_size > 5000


def test_non_finite_rows_from_a_peer_are_skipped():
    import torch

    bad = torch.tensor([[0.0, float("nan"), 1.0, 2.0], [1.0, 0.0, float("inf"), 3.0], [0.0, 1.0, 1.0, 2.0]])
    assert timeline_records(bad, "client 9") == [
        {"who": "client 9", "kind": "compute", "round": 1, "start": 1.0, "end": 2.0}
    ]
