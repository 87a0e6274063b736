"""A part is a module usable alone in another process: save the body, run it elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from fedcore.model import SplitState, split_model
from fedcore.model.tiny import tiny_causal_lm

CHILD = """
import sys, torch
from fedcore.model import SplitState
body = torch.load(sys.argv[1], weights_only=False)
wire = torch.load(sys.argv[2])
out = body(SplitState.from_wire(wire))
torch.save(out.to_wire(), sys.argv[3])
"""


def test_body_runs_alone_in_another_process(tmp_path):
    model = tiny_causal_lm("qwen2", num_layers=4, use_sliding_window=True, sliding_window=4, max_window_layers=2)
    sm = split_model(model, 1, 1)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 128, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    h_a = sm.head(ids, mask)
    expected = sm.body(h_a).hidden

    torch.save(sm.body, tmp_path / "body.pt")  # the body alone: no head, tail or full model
    torch.save(h_a.to_wire(), tmp_path / "h_a.pt")
    env = dict(os.environ, PYTHONSAFEPATH="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "body.pt"), str(tmp_path / "h_a.pt"), str(tmp_path / "h_b.pt")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    h_b = SplitState.from_wire(torch.load(tmp_path / "h_b.pt"))
    torch.testing.assert_close(h_b.hidden, expected, rtol=0, atol=0)
    saved_params = sum(p.numel() for p in torch.load(tmp_path / "body.pt", weights_only=False).parameters())
    assert saved_params == sum(p.numel() for p in sm.body.parameters())
    assert saved_params < sum(p.numel() for p in model.parameters()) / 2
