"""FibecFed and FedIT over a ``Link``: the same client-side work as the simulation
(``local.client_init``, ``local.local_round``), with messages in between.

Server: ``init`` to every client -> each returns its layer sensitivity (L,) -> the server
aggregates them weighted by n_k and picks the GAL -> ``gal`` to every client. Round t: sample K
clients; each gets ``round`` with the GAL parameters (tag ``gal_down``), trains its curriculum
batches of round t with its neuron masks, and uploads only the GAL parameters (``gal_up``);
FedAvg weighted by n_k. ``eval`` asks a client for its counts under its local layers + the
global GAL parameters. FedIT: no init phase, every layer in the GAL, all batches in random order.

Checkpoints: after each round the server asks every client still in the run for what it holds
beyond the global GAL state (``save`` -> ``saved``: its whole LoRA state, its Fisher row sums, its
curriculum order and its RNG) and emits a ``Checkpoint`` with those and its own state (the global
GAL parameters, the GAL, the sampler's RNG, the roster, the results so far). A restored server
skips the init phase and sends each client ``restore`` with its part, then goes on: bit for bit
the uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from fedcore.aggregate import mismatch, weighted_average
from fedcore.transport import PeerTimeout, TransportError

from ..registry import Checkpoint, Progress, ProgressEvent, python_rng_state, restore_python_rng
from ..roster import Roster
from .config import FibecFedConfig
from .curriculum import batches_in_round
from .layers import aggregate_layer_scores, gal_rule, select_global_layers
from .local import Batch, State, client_init, evaluate_state, layer_of, local_round
from .neurons import top_neurons

log = logging.getLogger("fedcore.fibecfed")


@dataclass
class RoleRunResult:
    """Per round: answer-token accuracy and exact match over the evaluated clients, uplink bytes
    (GAL uploads as counted on the wire) and seconds; the GAL and the init phase's seconds."""

    global_layers: list[int]
    init_seconds: float
    token_accuracy: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    uplink_bytes: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)  # nats per answer token over the evaluated clients
    dropped: dict[int, str] = field(default_factory=dict)  # client index -> why it left the run
    final_state: State = field(default_factory=dict)  # the global GAL parameters at the end
    client_states: dict[int, State] = field(default_factory=dict)  # client -> its whole LoRA at the end


class FibecFedClient:
    """Client ``index``: its own copy of the model, its batches, its LoRA state across rounds."""

    def __init__(
        self,
        link: Any,
        model: PreTrainedModel,
        start_state: State,
        batches: list[Batch],
        eval_batch: Batch,
        size: int,
        config: FibecFedConfig,
        *,
        index: int,
    ):
        self.link, self.model, self.batches, self.eval_batch = link, model, batches, eval_batch
        self.size, self.c, self.index = size, config, index
        self.state = dict(start_state)
        self.start_state = start_state
        self.order = list(range(len(batches)))
        self.rows: State = {}
        self.masks: State = {}
        self.rng = random.Random(config.seed * 1009 + index)

    def run(self) -> None:
        while True:
            msg = self.link.recv(None)
            op, meta = msg.meta.get("op"), msg.meta
            if op == "init":
                scores, self.order, self.rows = client_init(self.model, self.start_state, self.batches, self.c)
                self.link.send_to("server", {"scores": scores.cpu()}, {"op": "init_done"}, tag="control")
            elif op == "gal":
                self.set_gal(meta["layers"])
            elif op == "save":
                self.save(int(meta["round"]))
            elif op == "restore":
                self.restore(msg.tensors, meta)
            elif op == "round":
                self.train_round(int(meta["round"]), dict(msg.tensors))
            elif op == "eval":
                state = {**self.state, **msg.tensors}
                counts = evaluate_state(self.model, state, self.eval_batch)
                self.link.send_to("server", {}, {"op": "eval_result", "counts": list(counts)}, tag="control")
            elif op == "stop":
                return
            msg.release()

    def set_gal(self, layers: list[int]) -> None:
        """The GAL is known: neuron masks (from the init phase's row sums) for the local layers."""
        gal = set(layers)
        if self.c.method == "fibecfed" and self.c.neuron_selection:
            self.masks = {n: top_neurons(r, self.c.rho) for n, r in self.rows.items() if layer_of(n) not in gal}

    def save(self, t: int) -> None:
        """Send the server what a restarted process of this client needs after round ``t``."""
        tensors = {STATE + n: v.cpu() for n, v in self.state.items()}
        tensors.update({ROWS + n: v.cpu() for n, v in self.rows.items()})
        meta = {"op": "saved", "round": t, "order": list(self.order), "rng": python_rng_state(self.rng)}
        self.link.send_to("server", tensors, meta, tag="control")

    def restore(self, tensors: State, meta: dict[str, Any]) -> None:
        """A resumed server's first message: what ``save`` sent, and the GAL."""
        device = next(iter(self.start_state.values())).device
        state = {n[len(STATE) :]: v.to(device, copy=True) for n, v in tensors.items() if n.startswith(STATE)}
        if set(state) != set(self.start_state):
            raise ValueError(f"restore needs the {len(self.start_state)} LoRA tensors, got {len(state)}")
        self.state = state
        self.rows = {n[len(ROWS) :]: v.to(device, copy=True) for n, v in tensors.items() if n.startswith(ROWS)}
        self.order = [int(i) for i in meta["order"]]
        self.rng = restore_python_rng(random.Random(), meta["rng"])
        self.set_gal(meta["layers"])

    def train_round(self, t: int, global_state: State) -> None:
        state = {**self.state, **global_state}
        c = self.c
        if c.method == "fedit" or not c.curriculum:
            order = self.rng.sample(range(len(self.batches)), len(self.batches))
            count = len(order)
        else:
            order = self.order
            count = batches_in_round(t, c.rounds, self.size, c.batch_size, beta=c.beta, alpha=c.alpha, kind=c.pace)
        self.state = local_round(self.model, state, [self.batches[i] for i in order[:count]], self.masks, c)
        upload = {n: self.state[n].cpu() for n in global_state}  # the wire takes host tensors
        self.link.send_to("server", upload, {"op": "upload", "round": t}, tag="gal_up")


class FibecFedServer:
    """The server: init phase, GAL, rounds of K sampled clients, FedAvg of the GAL parameters."""

    def __init__(
        self,
        link: Any,
        peers: list[str],
        sizes: list[int],
        start_state: State,
        config: FibecFedConfig,
        *,
        on_progress: Progress | None = None,
    ):
        self.link, self.peers, self.sizes, self.c = link, peers, sizes, config
        self.on_progress = on_progress
        self.start_state = start_state
        self.rng = random.Random(config.seed)
        self.timeout = 600.0
        self.roster = Roster(peers, name=config.method)  # a client whose lease runs out (or send fails) leaves
        self.t0 = time.perf_counter()
        self.resumed: tuple[RoleRunResult, State, dict[str, tuple[State, dict[str, Any]]]] | None = None

    @property
    def active(self) -> set[str]:
        return set(self.roster.active)

    def _drop(self, peer: str, why: str) -> None:
        self.roster.drop(peer, why)  # AllClientsLost when it was the last one

    def _send(self, peer: str, tensors: State, meta: dict[str, Any], tag: str) -> None:
        try:
            self.link.send_to(peer, tensors, meta, tag=tag)
        except TransportError as exc:
            self._drop(peer, f"send failed: {exc}")

    def _await(self, op: str, peers: set[str], rnd: int | None = None) -> dict[str, Any]:
        """One ``op`` message from each of ``peers`` (others are released: the protocol is
        lock-step, so nothing else is due now)."""
        got: dict[str, Any] = {}
        deadline = time.monotonic() + self.timeout
        while (peers & self.active) - set(got):
            if time.monotonic() > deadline:
                for p in (peers & self.active) - set(got):
                    self._drop(p, f"no {op!r} within {self.timeout} s")
                break
            try:
                msg = self.link.recv(1.0)
            except PeerTimeout as exc:
                if getattr(exc, "peer", None) is not None:
                    self._drop(exc.peer, str(exc))  # type: ignore[attr-defined]
                continue
            if msg.meta.get("op") == op and msg.peer in peers & self.active and msg.peer not in got:
                if rnd is None or msg.meta.get("round") == rnd:
                    got[msg.peer] = msg
                    continue
            msg.release()
        return got

    def run(self) -> RoleRunResult:
        c, n = self.c, len(self.peers)
        if self.resumed is None:
            gal = self.choose_gal()
            for p in sorted(self.active):
                self._send(p, {}, {"op": "gal", "layers": gal}, tag="control")
            result = RoleRunResult(global_layers=gal, init_seconds=time.perf_counter() - self.t0)
            global_state = {k: v.clone() for k, v in self.start_state.items() if layer_of(k) in gal}
        else:
            result, global_state, saved = self.resumed
            for p in self.peers:
                if p not in self.active:  # a restarted process of a dropped client: let it go
                    self._send(p, {}, {"op": "stop"}, tag="control")
                    continue
                tensors, meta = saved[p]
                self._send(p, tensors, {**meta, "op": "restore", "layers": result.global_layers}, tag="gal_down")
        evaluated = self.peers[: min(c.eval_clients, n)]
        for t in range(len(result.eval_loss), c.rounds):
            t1 = time.perf_counter()
            alive = [k for k in range(n) if self.peers[k] in self.active]
            sampled = sorted(self.rng.sample(alive, min(c.per_round, len(alive))))
            for k in sampled:
                self._send(self.peers[k], global_state, {"op": "round", "round": t}, tag="gal_down")
            got = self._await("upload", {self.peers[k] for k in sampled}, rnd=t)
            kept = [  # late, dropped or malformed uploads are left out of this round's average
                k for k in sampled if self.peers[k] in got and _fits(got[self.peers[k]].tensors, global_state)
            ]
            uploads = [got[self.peers[k]] for k in kept]
            if uploads:
                global_state = weighted_average([m.tensors for m in uploads], [float(self.sizes[k]) for k in kept])
            result.uplink_bytes.append(sum(m.nbytes for m in uploads))
            asked = [p for p in evaluated if p in self.active]
            for p in asked:
                self._send(p, global_state, {"op": "eval"}, tag="gal_down")
            replies = self._await("eval_result", set(asked))  # one wait: a reply is never dropped
            counts = [replies[p].meta.get("counts") for p in asked if p in replies]
            counts = [
                x for x in counts if isinstance(x, list) and len(x) == 5 and all(isinstance(v, (int, float)) for v in x)
            ]
            sums = [sum(x[i] for x in counts) for i in range(5)]
            result.accuracy.append(sums[0] / max(sums[1], 1))
            result.token_accuracy.append(sums[2] / max(sums[3], 1))
            result.eval_loss.append(sums[4] / sums[3] if sums[3] else float("nan"))
            result.round_seconds.append(time.perf_counter() - t1)
            if self.on_progress is not None:
                ckpt = functools.partial(self.checkpoint, result, global_state)  # built only when kept
                self.on_progress(ProgressEvent(1, result.eval_loss[-1], f"round {t + 1}/{c.rounds}", t, ckpt))
        if c.output.save_model:
            result.client_states = self.final_states(result, global_state)
        for p in sorted(self.active):
            self._send(p, {}, {"op": "stop"}, tag="control")
        result.dropped = self.roster.dropped_by_index()
        result.final_state = global_state
        return result

    def final_states(self, result: RoleRunResult, global_state: State) -> dict[int, State]:
        """The whole LoRA each evaluated client ends with (its local layers under the global GAL),
        collected with ``save`` as a checkpoint is; a client that does not answer is left out."""
        tensors = self.checkpoint(result, global_state).tensors
        out: dict[int, State] = {}
        for k in range(min(self.c.eval_clients, len(self.peers))):
            prefix = f"client/{k}/{STATE}"
            own = {n[len(prefix) :]: v for n, v in tensors.items() if n.startswith(prefix)}
            if own:
                out[k] = {**own, **global_state}
        return out

    def choose_gal(self) -> list[int]:
        """The init phase (FibecFed): every client's layer sensitivity -> the GAL; FedIT: all layers."""
        n_layers = 1 + max(layer_of(name) for name in self.start_state)
        if self.c.method == "fedit":
            return list(range(n_layers))
        for p in self.peers:
            self._send(p, {}, {"op": "init"}, tag="control")
        got = self._await("init_done", set(self.peers))
        usable = {p for p, m in got.items() if _finite_vector(m.tensors.get("scores"), n_layers)}
        ok = [k for k, p in enumerate(self.peers) if p in usable]
        if not ok:
            raise RuntimeError("no client sent usable layer scores")
        scores = [got[self.peers[k]].tensors["scores"] for k in ok]
        return select_global_layers(aggregate_layer_scores(scores, [self.sizes[k] for k in ok]), **gal_rule(self.c))

    # ---- checkpoint and resume
    def checkpoint(self, result: RoleRunResult, global_state: State) -> Checkpoint:
        """The run after ``len(result.eval_loss)`` rounds; asks every client still in the run for its
        part (one that does not answer within the timeout is dropped, as in a round)."""
        t = len(result.eval_loss)
        asked = sorted(self.active)
        for p in asked:
            self._send(p, {}, {"op": "save", "round": t - 1}, tag="control")
        got = self._await("saved", set(asked), rnd=t - 1)
        tensors = {GLOBAL + n: v.detach().to("cpu", copy=True) for n, v in global_state.items()}
        clients: dict[str, Any] = {}
        for p, msg in got.items():
            k = self.peers.index(p)
            tensors.update({f"client/{k}/{n}": v.clone() for n, v in msg.tensors.items()})
            clients[str(k)] = {"order": msg.meta.get("order"), "rng": msg.meta.get("rng")}
            msg.release()
        roster = self.roster
        state = {
            "algorithm": "fibecfed",
            "method": self.c.method,
            "clients": len(self.peers),
            "sampler_rng": python_rng_state(self.rng),
            "roster": {
                "active": [k for k, p in enumerate(self.peers) if p in got],
                "dropped": [[roster.index(p), why] for p, why in roster.dropped.items()],
            },
            "client_states": clients,
            "wall_seconds": time.perf_counter() - self.t0,
            "result": {
                "global_layers": result.global_layers,
                "init_seconds": result.init_seconds,
                **{k: list(getattr(result, k)) for k in PER_ROUND},
            },
        }
        return Checkpoint(round=t, tensors=tensors, state=state)

    def restore(self, ckpt: Checkpoint) -> None:
        """Go on from ``ckpt`` (before ``run()``); ``ValueError`` (one line) when it does not fit."""
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a fibecfed checkpoint: {type(exc).__name__}: {exc}") from exc

    def _restore(self, ckpt: Checkpoint) -> None:
        st, peers, c = ckpt.state, self.peers, self.c
        if st["algorithm"] != "fibecfed" or st["method"] != c.method or st["clients"] != len(peers):
            got = f"{st['algorithm']} ({st['method']}) with {st['clients']} clients"
            raise ValueError(f"checkpoint of {got}, not of fibecfed ({c.method}) with {len(peers)}")
        if not 0 < ckpt.round <= c.rounds:
            raise ValueError(f"checkpoint after {ckpt.round} rounds; rounds = {c.rounds}")
        res = st["result"]
        if any(len(res[k]) != ckpt.round for k in PER_ROUND):
            raise ValueError(f"checkpoint after {ckpt.round} rounds holds results of another length")
        gal = [int(x) for x in res["global_layers"]]
        global_state = {n[len(GLOBAL) :]: v for n, v in ckpt.tensors.items() if n.startswith(GLOBAL)}
        why = mismatch(global_state, {k: v for k, v in self.start_state.items() if layer_of(k) in gal})
        if why is not None:
            raise ValueError(f"checkpoint's global GAL state does not fit this config's adapter: {why}")
        indices = [int(k) for k in st["roster"]["active"]] + [int(k) for k, _ in st["roster"]["dropped"]]
        if not all(0 <= k < len(peers) for k in indices):
            raise ValueError(f"checkpoint's roster {st['roster']} does not fit {len(peers)} clients")
        active = [peers[int(k)] for k in st["roster"]["active"]]
        dropped = {peers[int(k)]: str(why) for k, why in st["roster"]["dropped"]}
        if len(set(active)) != len(active) or set(active) & set(dropped):
            raise ValueError(f"checkpoint's roster {st['roster']} does not fit {len(peers)} clients")
        missing = sorted(set(peers) - set(active) - set(dropped))  # did not answer the save: dropped then
        dropped.update({p: "no state at the checkpoint" for p in missing})
        if not active:
            raise ValueError("checkpoint has no client still in the run")
        saved: dict[str, tuple[State, dict[str, Any]]] = {}
        for p in active:
            k = peers.index(p)
            prefix = f"client/{k}/"
            tensors = {n[len(prefix) :]: v for n, v in ckpt.tensors.items() if n.startswith(prefix)}
            state = {n[len(STATE) :]: v for n, v in tensors.items() if n.startswith(STATE)}
            why = mismatch(state, self.start_state)
            if why is not None:
                raise ValueError(f"checkpoint's LoRA state of client {k} does not fit this config's adapter: {why}")
            info = st["client_states"][str(k)]
            restore_python_rng(random.Random(), info["rng"])  # checked here, used by the client
            saved[p] = (tensors, {"order": [int(i) for i in info["order"]], "rng": info["rng"]})
        result = RoleRunResult(global_layers=gal, init_seconds=float(res["init_seconds"]))
        for key in PER_ROUND:
            setattr(result, key, [float(x) if key != "uplink_bytes" else int(x) for x in res[key]])
        rng = restore_python_rng(random.Random(), st["sampler_rng"])
        # all read and checked: only now change the server
        self.rng = rng
        self.roster.active[:], self.roster.dropped = active, dropped
        self.t0 = time.perf_counter() - float(st["wall_seconds"])
        self.resumed = (result, {n: v.clone() for n, v in global_state.items()}, saved)
        log.info("fibecfed: resuming after round %d of %d", ckpt.round, c.rounds)


GLOBAL, STATE, ROWS = "global/", "state/", "rows/"
PER_ROUND = ("token_accuracy", "accuracy", "uplink_bytes", "round_seconds", "eval_loss")


def _finite_vector(t: Any, n: int) -> bool:
    return isinstance(t, torch.Tensor) and t.shape == (n,) and t.is_floating_point() and bool(torch.isfinite(t).all())


def _fits(upload: dict[str, torch.Tensor], reference: State) -> bool:
    """An upload FedAvg can use: exactly the GAL parameters, their shapes and dtypes, finite."""
    return mismatch(upload, reference) is None
