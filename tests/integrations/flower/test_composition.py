"""fedcore's FedIT ClientApp under Flower's own strategies and wrappers, and a misbehaving node.

Its updates are plain arrays, so Flower's robust aggregators take them as they are (FedMedian
here), and Flower's DP wrapper clips and noises them around ``FedITStrategy``: both change the
aggregate against plain FedIT. A node whose upload is non-finite, or whose ClientApp raises, is
left out of that round with a logged reason, and the run finishes with the others."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from fedcore.algorithms.fedit.local import initial_state
from fedcore.runtime.runner import run_threads

from .conftest import simulate, tiny

pytestmark = pytest.mark.timeout(300)


def with_train(honest, train):
    """A ClientApp that answers as ``honest`` except for train messages, which ``train`` handles."""
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.query("fedcore_hello")(honest)
    app.evaluate()(honest)
    app.train()(train)
    return app


def max_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_fedmedian_and_dp_clipping_change_the_aggregate() -> None:
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedMedian

    from fedcore.integrations.flower import fedit_client_app, fedit_server_app
    from fedcore.integrations.flower.records import arrays_of, state_of

    config = tiny("fedit")
    start, fedavg = initial_state(config), run_threads(config).result.final_state
    median: list[dict[str, torch.Tensor]] = []
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:  # a user's own ServerApp with Flower's strategy
        strategy = FedMedian(min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3)
        result = strategy.start(grid, arrays_of(start), num_rounds=config.train.rounds, timeout=120)
        median.append(state_of(result.arrays))

    simulate(app, fedit_client_app(config), 3)
    assert set(median[0]) == set(fedavg)
    assert all(torch.isfinite(t).all() for t in median[0].values())
    assert max_change(median[0], fedavg) > 1e-6  # the median of 3 is not their weighted mean
    assert max_change(median[0], start) > 1e-4  # and it trained

    noised: list = []

    def dp(strategy):  # clip each update to L2 norm 0.01 and add Gaussian noise to the aggregate
        return DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=0.5, clipping_norm=0.01,
                                                          num_sampled_clients=3)  # fmt: skip

    simulate(fedit_server_app(config, wrap=dp, on_outcome=noised.append), fedit_client_app(config), 3)
    private = noised[0].result.final_state
    assert max_change(private, fedavg) > 1e-4
    # the wrapper saw fedcore's checked rounds: every client in, losses finite
    assert noised[0].result.included == [[0, 1, 2]] * 2
    assert all(math.isfinite(x) for x in noised[0].result.round_loss)


def test_a_bad_node_is_left_out_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from flwr.app import ArrayRecord, Context, Message, RecordDict

    from fedcore.integrations.flower import fedit_client_app, fedit_server_app

    config = tiny("fedit")
    honest = fedit_client_app(config)

    def train(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        if context.node_config["partition-id"] != 1:
            return reply
        if msg.content["config"]["server-round"] == 2:
            raise RuntimeError("client 1 crashes in round 2")
        arrays = reply.content["arrays"]
        poisoned = {n: torch.full_like(t, math.inf) for n, t in arrays.to_torch_state_dict().items()}
        return Message(RecordDict({"arrays": ArrayRecord(poisoned), "metrics": reply.content["metrics"]}),
                       reply_to=msg)  # fmt: skip

    app = with_train(honest, train)

    got: list = []
    with caplog.at_level(logging.WARNING, logger="fedcore.flower"):
        simulate(fedit_server_app(config, on_outcome=got.append), app, 3)
    result = got[0].result
    assert result.included == [[0, 2], [0, 2]]
    assert all(math.isfinite(x) for x in result.round_loss)
    assert all(torch.isfinite(t).all() for t in result.final_state.values())
    reasons = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert any("round 1: client 1" in m and "not a finite" in m for m in reasons), reasons
    assert any("round 2: client 1" in m and "error reply" in m for m in reasons), reasons


def test_a_fedbcd_node_that_lost_its_state_is_resynced(caplog: pytest.LogCaptureFixture) -> None:
    from flwr.app import Context, Message, RecordDict

    from fedcore.integrations.flower import fedbcd_client_app, fedbcd_server_app

    config = tiny("fedbcd", rounds=4, schedule="sequential")
    honest = fedbcd_client_app(config)

    def train(msg: Message, context: Context) -> Message:
        if context.node_config["partition-id"] == 1 and msg.content["config"]["round"] == 2:
            context.state = RecordDict()  # its SuperNode restarted: the blocks it held are gone
        return honest(msg, context)

    app = with_train(honest, train)

    got: list = []
    with caplog.at_level(logging.WARNING, logger="fedcore.flower"):
        simulate(fedbcd_server_app(config, on_outcome=got.append), app, 3)
    records = got[0].result.records
    assert [r.included for r in records] == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 1, 2]]  # back after one round
    assert any("client 1" in r.getMessage() and "version 0, not 1" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
    assert records[3].down_bytes > records[2].down_bytes  # it got every block changed since version 0
    assert all(math.isfinite(x) for x in got[0].result.eval_loss)
