"""FibecFed as a registered algorithm (``algorithm = "fibecfed"``): the server and client roles of
``roles.py``, each process building the same seeded model and shards (``local.build_setup``)."""

from __future__ import annotations

import copy
from typing import Any

from fedcore.data import EncodeStats
from fedcore.lora import inject_lora, load_lora_state
from fedcore.model import blocks

from ..builders import ClientData, client_datasets, describe_model, tokenizer_of
from ..registry import AlgorithmSpec, Progress, ReportTable, RunReport, TrainedModel, register_algorithm
from .config import FibecFedConfig
from .local import build_setup
from .roles import FibecFedClient, FibecFedServer, RoleRunResult


def fibecfed_server(
    config: FibecFedConfig, link: Any, peers: list[str], on_progress: Progress | None = None
) -> FibecFedServer:
    _, start_state, _, _, sizes = build_setup(config)
    return FibecFedServer(link, peers, sizes, start_state, config, on_progress=on_progress)


def fibecfed_client(config: FibecFedConfig, link: Any, index: int) -> FibecFedClient:
    model, start_state, train, evals, sizes = build_setup(config)
    return FibecFedClient(
        link, copy.deepcopy(model), start_state, train[index], evals[index], sizes[index], config, index=index
    )


def client_data(config: FibecFedConfig) -> list[ClientData]:
    """Each client's held-out data as the roles use it (the generated task's one eval batch, or
    ``data.path``'s shards with their generation prompts)."""
    if config.data.path:
        return client_datasets(config.data, config.clients, config.batch_size, tokenizer_of(config.model))
    _, _, _, evals, sizes = build_setup(config)  # the generated task: no generation prompts
    return [
        ClientData(train=[], eval_batches=[batch], skills={}, stats=EncodeStats(kept=n))
        for batch, n in zip(evals, sizes, strict=True)
    ]


def describe(config: FibecFedConfig) -> str:
    m = config.model
    gal = "eigengap rule" if config.gal_eigengap else f"ratio {config.gal_ratio}"
    return (
        f"fibecfed ({config.method}): {describe_model(m)}, LoRA r {config.lora_r} on q, v, "
        f"{config.clients} clients ({config.per_round} per round), {config.rounds} rounds, GAL by {gal}, "
        f"curriculum {'on' if config.curriculum else 'off'}, neuron masks "
        f"{'rho ' + str(config.rho) if config.neuron_selection else 'off'}"
    )


def report(config: FibecFedConfig, result: RoleRunResult, wire: dict[str, Any]) -> RunReport:
    """Per round: eval loss over the evaluated clients (``losses``), token accuracy, exact match,
    uplink bytes."""
    rows = [
        [str(t + 1), f"{loss:.4f}", f"{tok:.3f}", f"{acc:.3f}", f"{up / 2**20:,.3f}"]
        for t, (loss, tok, acc, up) in enumerate(
            zip(result.eval_loss, result.token_accuracy, result.accuracy, result.uplink_bytes, strict=True)
        )
    ]
    return RunReport(
        losses=list(result.eval_loss),
        tables=[
            ReportTable(
                f"fibecfed: GAL {result.global_layers}; evaluated clients' held-out data per round"
                + (f"; dropped {sorted(result.dropped)}" if result.dropped else ""),
                ["round", "eval loss", "token acc.", "exact match", "uplink MiB"],
                rows,
            )
        ],
        records=[
            (
                "round",
                {
                    "round": t,
                    "eval_loss": loss,
                    "token_accuracy": tok,
                    "accuracy": acc,
                    "uplink_bytes": up,
                    "seconds": sec,
                },
            )  # fmt: skip
            for t, (loss, tok, acc, up, sec) in enumerate(
                zip(
                    result.eval_loss,
                    result.token_accuracy,
                    result.accuracy,
                    result.uplink_bytes,
                    result.round_seconds,
                    strict=True,
                )  # fmt: skip
            )
        ],
        curve=[(float(t + 1), loss) for t, loss in enumerate(result.eval_loss)],
        x_label="round (held-out loss of the evaluated clients)",
        summary={
            "global_layers": result.global_layers,
            "init_seconds": result.init_seconds,
            "eval_loss": result.eval_loss,
            "token_accuracy": result.token_accuracy,
            "uplink_bytes": sum(result.uplink_bytes),
            "wire": wire,
            "dropped": {str(k): v for k, v in result.dropped.items()},
        },
        trained=trained_model(config, result),
    )


SPEC = register_algorithm(
    AlgorithmSpec(
        name="fibecfed",
        config_class=FibecFedConfig,
        server=fibecfed_server,
        client=fibecfed_client,
        report=report,
        total=lambda c: c.rounds,
        describe=describe,
        resumable=True,
        client_data=client_data,
    )
)


def trained_model(config: FibecFedConfig, result: RoleRunResult) -> TrainedModel | None:
    """Each evaluated client's LoRA at the end: the global GAL layers and its own local layers."""
    states = result.client_states
    if not states:
        return None

    def apply(model: Any, client: int) -> None:
        inject_lora(list(blocks(model)), targets=["q", "v"], r=config.lora_r, alpha=2.0 * config.lora_r)
        load_lora_state(model, states[client])

    return TrainedModel("lora", apply, shared=False, clients=sorted(states))
