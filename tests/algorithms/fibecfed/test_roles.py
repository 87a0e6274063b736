"""FibecFed / FedIT over a Link: in-process threads and real client processes (CURVE) run the
simulation's own client code and reach the same GAL; uploads carry only the GAL parameters."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from fedcore.algorithms.fibecfed import FibecFedConfig, run_fibecfed
from fedcore.algorithms.fibecfed.local import build_setup, layer_of
from fedcore.algorithms.fibecfed.roles import FibecFedClient
from fedcore.algorithms.fibecfed.spec import fibecfed_server
from fedcore.algorithms.threads import serve_in_threads
from fedcore.config import TransportConfig
from fedcore.runtime import run_processes, run_threads


def run_roles_inprocess(c: FibecFedConfig, *, client_cls: type = FibecFedClient):
    """The registry's roles in threads, with client ``client_cls`` (a subclass injects faults)."""
    model, start, train, evals, sizes = build_setup(c)

    def client(k: int):
        return lambda link: client_cls(link, copy.deepcopy(model), start, train[k], evals[k], sizes[k], c, index=k)

    server = lambda link, peers: fibecfed_server(c, link, peers)  # noqa: E731
    result, _, _ = serve_in_threads(server, [client(k) for k in range(c.clients)])
    return result


def config(**kw) -> FibecFedConfig:
    base = dict(clients=3, per_round=2, rounds=2, eval_clients=2, samples_per_client=16, gal_ratio=0.5)
    base.update(kw)
    return FibecFedConfig(**base)


def gal_bytes(c: FibecFedConfig, gal: list[int]) -> int:
    _, start, _, _, _ = build_setup(c)
    return sum(v.numel() * v.element_size() for n, v in start.items() if layer_of(n) in gal)


@pytest.mark.parametrize("method", ["fibecfed", "fedit"])
def test_inprocess_roles_match_the_simulation_gal_and_upload_only_it(method):
    c = config(method=method)
    roles = run_threads(c).result
    sim = run_fibecfed(c)
    assert roles.global_layers == sim.global_layers
    assert len(roles.global_layers) == (2 if method == "fibecfed" else 4)
    assert roles.uplink_bytes == [c.per_round * gal_bytes(c, roles.global_layers)] * c.rounds
    assert len(roles.token_accuracy) == c.rounds and all(0.0 <= a <= 1.0 for a in roles.token_accuracy)


def test_real_client_processes_over_curve():
    c = config()
    zmq = TransportConfig(kind="zmq", curve=True, lease_s=30.0)
    result = run_processes(dataclasses.replace(c, transport=zmq)).result
    assert result.global_layers == run_fibecfed(c).global_layers
    assert result.uplink_bytes == [c.per_round * gal_bytes(c, result.global_layers)] * c.rounds


def test_a_client_that_fails_leaves_the_run_and_the_rest_finish():
    class Failing(FibecFedClient):
        def train_round(self, t, global_state):
            if self.index == 0 and t == 1:
                raise RuntimeError("boom")
            super().train_round(t, global_state)

    c = config(clients=3, per_round=3, rounds=3)
    result = run_roles_inprocess(c, client_cls=Failing)
    assert set(result.dropped) == {0}
    assert len(result.token_accuracy) == 3
    one = gal_bytes(c, result.global_layers)
    assert result.uplink_bytes == [3 * one, 2 * one, 2 * one]
