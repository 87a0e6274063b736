"""FedBCD, ParaBlock and FedCyBGD as registered algorithms (``algorithm = "fedbcd"`` etc.): one
``BCDConfig`` whose ``method`` the registry name fixes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fedcore.lora import inject_lora
from fedcore.model import blocks, group_blocks

from ..builders import describe_model
from ..registry import AlgorithmSpec, ReportTable, RunReport, TrainedModel, register_algorithm
from .config import METHODS, BCDConfig, resume_refusal
from .runner import BCDResult, bcd_client, bcd_server
from .timeline import plot_timeline


def describe(config: BCDConfig) -> str:
    m = config.model
    return (
        f"{config.method}: {describe_model(m)}, "
        f"{config.num_blocks} blocks ({config.mode}), {config.clients} clients, {config.rounds} rounds of "
        f"K={config.local_steps}, schedule {config.schedule}"
        + (f", links at {config.transport.mbps} MB/s" if config.transport.mbps else "")
    )


def report(config: BCDConfig, result: BCDResult, wire: dict[str, Any]) -> RunReport:
    """Per client: held-out loss under the final global model (``losses``); bytes each way."""
    clients = [[str(i), f"{loss:.4f}", result.dropped.get(i, "-")] for i, loss in enumerate(result.eval_loss)]
    totals = [
        f"{result.final_loss:.4f}",
        f"{result.download_bytes / 2**20:,.2f}",
        f"{result.upload_bytes / 2**20:,.2f}",
        str(len(result.records)),
        f"{result.wall_seconds:.1f}",
        ", ".join(str(k) for k in result.dropped) or "-",
    ]

    def plots(run_dir: Path) -> list[Path]:
        if not result.timeline:
            return []
        path = run_dir / "timeline.png"
        plot_timeline(result.timeline, path, title=f"{result.method}: compute vs comm")
        return [path]

    return RunReport(
        losses=list(result.eval_loss),
        tables=[
            ReportTable(
                f"{result.method}: held-out loss under the final global model, bytes counted at the server",
                ["final loss", "download MiB", "upload MiB", "rounds", "seconds", "dropped"],
                [totals],
            ),
            ReportTable("held-out loss per client", ["client", "loss", "dropped"], clients),
        ],
        records=[("round", asdict(rec)) for rec in result.records],
        curve=[(float(r.round + 1), r.train_loss) for r in result.records],
        x_label="round (mean training loss of the included clients)",
        summary={
            "method": result.method,
            "eval_loss": result.eval_loss,
            "final_loss": result.final_loss,
            "download_bytes": result.download_bytes,
            "upload_bytes": result.upload_bytes,
            "wire": result.wire,
            "wall_seconds": result.wall_seconds,
            "dropped": {str(k): v for k, v in result.dropped.items()},
        },
        plots=plots if config.output.plot else None,
        trained=trained_model(config, result),
    )


def check_model(config: BCDConfig, model: Any) -> None:
    """The checkpoint's layers group into blocks of ``layers_per_block`` (``ValueError`` if not)."""
    group_blocks(model, config.layers_per_block)


def trained_model(config: BCDConfig, result: BCDResult) -> TrainedModel | None:
    """The final global model's blocks (full parameters, or LoRA factors in ``lora`` mode), the same
    for every client."""
    if not result.final_params:
        return None
    params = result.final_params

    @torch.no_grad()
    def apply(model: Any, client: int) -> None:
        if config.mode == "lora":
            inject_lora(list(blocks(model)), r=config.lora_r, alpha=config.lora_alpha)
        for name, value in params.items():
            model.get_parameter(name).copy_(value)

    kept = [k for k in range(config.clients) if k not in result.dropped]
    return TrainedModel("lora" if config.mode == "lora" else "full", apply, shared=True, clients=kept)


SPECS = {
    method: register_algorithm(
        AlgorithmSpec(
            name=method,
            config_class=BCDConfig,
            server=bcd_server,
            client=bcd_client,
            report=report,
            total=lambda c: c.rounds,
            describe=describe,
            fixed={"method": method},
            resumable=True,
            resume_refusal=resume_refusal,
            check_model=check_model,
        )
    )
    for method in METHODS
}
