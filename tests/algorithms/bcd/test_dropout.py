"""A client that misses a round is left out of that aggregate and the run goes on (in-process,
late upload); a client whose process dies leaves the run (real processes, CURVE, lease)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from fedcore.algorithms.bcd import BCDConfig, BlockClient, expected_local, run_bcd, tiny_bcd_config
from fedcore.algorithms.bcd.runner import make_client
from fedcore.config import TransportConfig
from fedcore.runtime import run_processes

LATE_ROUND = 1


def config(method: str, **kw) -> BCDConfig:
    return tiny_bcd_config(**{"method": method, "rounds": 4, "dtype": "float64", "round_timeout_s": 1.5, **kw})


class LateClient(BlockClient):
    """Sends round LATE_ROUND's update after the server's deadline."""

    def send_upload(self, rnd: int) -> None:
        if rnd == LATE_ROUND and rnd in self.unsent:
            time.sleep(2.5)
        super().send_upload(rnd)


@pytest.mark.parametrize("method", ["fedbcd", "parablock"])
def test_a_late_client_is_left_out_of_that_round_only(method):
    cfg = config(method)
    history: dict = {}
    errors: list[float] = []

    def check(client, t):
        want = expected_local(history[client.next_agg], client.pending, cfg.eta)
        errors.append(max(float((client.trainer.params[n] - want[n]).abs().max()) for n in want))

    def factory(config, link, trainer, index, **kw):
        if index == 2:
            staleness = config.staleness if config.method == "parablock" else 0
            return LateClient(link, trainer, index=index, eta=config.eta, staleness=staleness, **kw)
        return make_client(config, link, trainer, index, **kw)

    result = run_bcd(cfg, on_round=check, history=history, client_factory=factory)
    assert [r.included for r in result.records] == [[0, 1, 2], [0, 1], [0, 1, 2], [0, 1, 2]]
    assert not result.dropped and all(x == x for x in result.eval_loss)
    assert max(errors) < 1e-12  # its own update of that round was rolled back by the correction


def test_a_killed_client_process_leaves_the_run():
    cfg = config(
        "parablock",
        clients=3,
        rounds=4,
        dtype="float32",
        round_timeout_s=60.0,
        transport=TransportConfig(kind="zmq", curve=True, lease_s=4.0),
    )
    procs: list = []

    def kill_after_first(record):
        if record.round == 0:
            procs[1].kill()

    result = run_processes(cfg, on_spawn=procs.extend, on_progress=lambda e: kill_after_first(e.record)).result
    assert set(result.dropped) == {1}
    assert [r.included for r in result.records][0] == [0, 1, 2]
    assert all(1 not in r.included for r in result.records[2:])
    assert len(result.records) == 4 and result.eval_loss[1] != result.eval_loss[1]  # NaN: gone
    assert all(torch.isfinite(p).all() for p in result.final_params.values())


class PoisonClient(BlockClient):
    """Uploads a delta with a NaN in round LATE_ROUND (FedBCD: it never applies its own delta)."""

    def compute(self, t, block):
        delta = super().compute(t, block)
        if t == LATE_ROUND:
            first = next(iter(delta.values()))
            first.view(-1)[0] = float("nan")
        return delta


def test_a_malformed_upload_is_refused_and_the_run_goes_on():
    def factory(config, link, trainer, index, **kw):
        if index == 0:
            return PoisonClient(link, trainer, index=index, eta=config.eta, staleness=0, **kw)
        return make_client(config, link, trainer, index, **kw)

    result = run_bcd(config("fedbcd", round_timeout_s=30.0), client_factory=factory)
    assert [r.included for r in result.records] == [[0, 1, 2], [1, 2], [0, 1, 2], [0, 1, 2]]
    assert all(bool(torch.isfinite(p).all()) for p in result.final_params.values())
    assert not result.dropped


class CrashingClient(BlockClient):
    def compute(self, t, block):
        if t == LATE_ROUND:
            raise RuntimeError("boom")
        return super().compute(t, block)


def test_a_crashed_client_thread_is_dropped_at_once_and_reported():
    def factory(config, link, trainer, index, **kw):
        if index == 1:
            return CrashingClient(link, trainer, index=index, eta=config.eta, staleness=0, **kw)
        return make_client(config, link, trainer, index, **kw)

    start = time.monotonic()
    result = run_bcd(config("fedbcd", round_timeout_s=600.0), client_factory=factory)
    assert time.monotonic() - start < 120  # not the 600 s round timeout
    assert list(result.dropped) == [1] and "client thread failed" in result.dropped[1] and "boom" in result.dropped[1]
    assert math.isnan(result.eval_loss[1]) and all(math.isfinite(result.eval_loss[k]) for k in (0, 2))
