"""A new method in one file and one registration call: federated mean estimation.

Each round the server sends its estimate; client i answers with the mean of its own data (a seeded
normal sample around i), and the server takes the sample-weighted average. `import` this module
before `fedcore.runtime.run_threads` / `run_processes` (client processes import it themselves).
"""

from dataclasses import dataclass, field

import torch

from fedcore.aggregate import weighted_average
from fedcore.algorithms import AlgorithmSpec, ProgressEvent, ReportTable, RunReport, register_algorithm
from fedcore.config import TransportConfig


@dataclass(kw_only=True)
class FedMeanConfig:
    algorithm: str = "fedmean"
    clients: int = 3
    rounds: int = 2
    transport: TransportConfig = field(default_factory=lambda: TransportConfig(kind="inprocess"))

    @property
    def num_clients(self) -> int:
        return self.clients


class Server:
    def __init__(self, config, link, peers, on_progress=None):
        self.config, self.link, self.peers, self.on_progress = config, link, peers, on_progress

    def run(self) -> list[float]:
        estimate = torch.zeros(4)
        for t in range(self.config.rounds):
            for peer in self.peers:
                self.link.send_to(peer, {"estimate": estimate}, {"op": "round", "round": t})
            replies = sorted((self.link.recv(60.0) for _ in self.peers), key=lambda m: self.peers.index(m.peer))
            estimate = weighted_average([m.tensors for m in replies], [m.meta["n"] for m in replies])["mean"]
            if self.on_progress:
                self.on_progress(ProgressEvent(1, float(estimate.mean()), f"round {t + 1}"))
        for peer in self.peers:
            self.link.send_to(peer, {}, {"op": "stop"})
        return estimate.tolist()


class Client:
    def __init__(self, config, link, index):
        self.link, self.data = link, index + torch.randn(10 + index, 4, generator=torch.Generator().manual_seed(index))

    def run(self) -> None:
        while self.link.recv(None).meta["op"] == "round":
            self.link.send_to("server", {"mean": self.data.mean(0)}, {"op": "mean", "n": len(self.data)})


register_algorithm(
    AlgorithmSpec(
        name="fedmean",
        config_class=FedMeanConfig,
        server=Server,
        client=Client,
        report=lambda config, result, wire: RunReport(
            losses=result,
            tables=[ReportTable("estimate", ["i", "mean"], [[str(i), f"{v:.4f}"] for i, v in enumerate(result)])],
        ),
        total=lambda config: config.rounds,
    )
)
