"""FedIT as a registered algorithm (``algorithm = "fedit"``): LoRA FedAvg's server and client roles,
both built from the config in every process, and the run's summary."""

from __future__ import annotations

import math
from typing import Any

from fedcore.lora import inject_lora, load_lora_state
from fedcore.model import blocks

from ..builders import describe_model
from ..registry import AlgorithmSpec, Progress, ReportTable, RunReport, TrainedModel, register_algorithm
from .config import FedITConfig
from .roles import FedITClient, FedITResult, FedITServer


def fedit_server(config: FedITConfig, link: Any, peers: list[str], on_progress: Progress | None = None) -> FedITServer:
    """The registry's server role for clients ``peers`` (peer ids in client order)."""
    return FedITServer(config, link, peers, on_progress)


def fedit_client(config: FedITConfig, link: Any, index: int) -> FedITClient:
    """The registry's client role ``index``: its model and shard built from the config."""
    return FedITClient(config, link, index)


def describe(config: FedITConfig) -> str:
    m, lc, tc = config.model, config.lora, config.train
    return (
        f"fedit (LoRA FedAvg): {describe_model(m)}, LoRA r={lc.r} "
        f"on {'/'.join(lc.targets)}, {tc.clients} clients ({config.participation:.0%} per round), "
        f"{tc.rounds} rounds of {tc.local_steps} steps"
    )


def _cell(x: float, fmt: str = ".4f") -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def report(config: FedITConfig, result: FedITResult, wire: dict[str, Any]) -> RunReport:
    """Per client: held-out loss under the initial and the final global adapter (``losses``: the
    final ones, NaN for dropped clients); totals: the mean final loss and the MiB each way."""
    rows = []
    for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True)):
        change = (end - start) / start if start and not math.isnan(start) else math.nan
        rows.append([str(k), str(result.examples[k]), _cell(start), _cell(end), _cell(change, "+.0%")])
    finals = [x for x in result.eval_end if not math.isnan(x)]
    final = sum(finals) / len(finals) if finals else math.nan
    totals = [
        _cell(final),
        f"{sum(result.upload_bytes) / 2**20:,.3f}",
        f"{sum(result.download_bytes) / 2**20:,.3f}",
        str(len(result.round_loss)),
        f"{result.wall_seconds:.1f}",
        ", ".join(f"{k} ({why})" for k, why in sorted(result.dropped.items())) or "-",
    ]
    records: list[tuple[str, dict[str, Any]]] = [
        (
            "round",
            {
                "round": t,
                "train_loss": result.round_loss[t],
                "participants": result.participants[t],
                "included": result.included[t],
                "upload_bytes": result.upload_bytes[t],
                "download_bytes": result.download_bytes[t],
            },
        )
        for t in range(len(result.round_loss))
    ]
    for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True)):
        records.append(("eval", {"client": k, "loss_start": start, "loss_end": end}))
    return RunReport(
        losses=list(result.eval_end),
        tables=[
            ReportTable(
                "fedit: held-out loss per client under the initial and the final global adapter",
                ["client", "examples", "loss start", "loss end", "change"],
                rows,
            ),
            ReportTable(
                "fedit totals (LoRA payload bytes of the rounds, counted at the server)",
                ["final loss", "upload MiB", "download MiB", "rounds", "seconds", "dropped"],
                [totals],
            ),
        ],
        records=records,
        curve=[(float(t + 1), loss) for t, loss in enumerate(result.round_loss)],
        x_label="round (mean training loss of the included clients)",
        summary={
            "eval_loss_start": result.eval_start,
            "eval_loss_end": result.eval_end,
            "final_loss": final,
            "round_loss": result.round_loss,
            "upload_bytes": sum(result.upload_bytes),
            "download_bytes": sum(result.download_bytes),
            "wire": wire,
            "wall_seconds": result.wall_seconds,
            "dropped": {str(k): v for k, v in result.dropped.items()},
        },
        trained=trained_model(config, result),
    )


def trained_model(config: FedITConfig, result: FedITResult) -> TrainedModel | None:
    """The final global adapter, the same for every client."""
    if not result.final_state:
        return None
    lc, state = config.lora, result.final_state

    def apply(model: Any, client: int) -> None:
        inject_lora(list(blocks(model)), targets=lc.targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)
        load_lora_state(model, state)

    kept = [k for k in range(config.train.clients) if k not in result.dropped]
    return TrainedModel("lora", apply, shared=True, clients=kept)


SPEC = register_algorithm(
    AlgorithmSpec(
        name="fedit",
        config_class=FedITConfig,
        server=fedit_server,
        client=fedit_client,
        report=report,
        total=lambda c: c.train.rounds,
        describe=describe,
        resumable=True,
    )
)
