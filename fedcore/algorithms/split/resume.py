"""Checkpoints of a split run (every mode) and the way back from one.

After round r's average every client holds the same head/tail LoRA (the server's last average)
and, in server-hierarchical mode, every body replica the same LoRA (their average); what else the
run depends on lives on both sides: the body's LoRA, the server's AdamW and LR schedule (one per
replica in server-hierarchical mode), and per client its AdamW and schedule, its noise stream and
its data position (``SplitClientRole.state``), which the server collects at each round's end.
Tensor names: ``body/<lora>``, ``avg/<head.|tail.lora>``, ``server/opt.*`` (server-hierarchical:
``server/<k>/opt.*``, replica k serving client k), ``client/<k>/<opt.*|rng.*>``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fedcore.aggregate import mismatch
from fedcore.lora import load_lora_state, lora_state

from ..registry import Checkpoint
from ..training_state import load_optimizer_state, optimizer_state
from .server_role import SplitResume, SplitServerResult, SplitServerRole, StepReport
from .step import ServerParts

BODY, AVG, SERVER = "body/", "avg/", "server/"

__all__ = ["split_checkpoint", "split_resume"]


def server_parts(role: SplitServerRole) -> dict[str, ServerParts]:
    """The body parts whose optimizers a checkpoint holds: ``""`` -> the one body, or (server-
    hierarchical) ``"<k>/"`` -> client k's replica."""
    replicas = getattr(role, "replicas", None)
    if replicas is None:
        return {"": role.parts}
    return {f"{role.clients.index(peer)}/": parts for peer, parts in replicas.items()}


def split_checkpoint(
    role: SplitServerRole, rounds_done: int, result: SplitServerResult, wall: float, *, mode: str
) -> Checkpoint:
    """The run after ``rounds_done`` rounds (call between rounds: it asks every client for its state)."""
    peers = role.clients
    tensors = {BODY + n: t.to("cpu") for n, t in lora_state(role.parts.body).items()}
    tensors.update({AVG + n: t.detach().to("cpu", copy=True) for n, t in role.last_average.items()})
    opt_info: dict[str, Any] = {}
    for key, parts in server_parts(role).items():
        opt_tensors, opt_info[key] = optimizer_state(parts.optimizer, parts.scheduler)
        tensors.update({SERVER + key + n: t for n, t in opt_tensors.items()})
    clients: dict[str, Any] = {}
    for peer, (client_tensors, state) in role.client_states().items():
        k = peers.index(peer)
        tensors.update({f"client/{k}/{n}": t.to("cpu") for n, t in client_tensors.items()})
        clients[str(k)] = state
    roster = role.roster
    state = {
        "algorithm": "split",
        "mode": mode,
        "clients": len(peers),
        "progress": len(result.reports),  # steps: the progress bar's unit
        "server_optimizer": opt_info,
        "client_states": clients,
        "roster": {
            "active": roster.active_indices(),
            "dropped": [[roster.index(p), why] for p, why in roster.dropped.items()],
            "rejoined": [[roster.index(p), rnd] for p, rnd in roster.rejoined.items()],
        },
        "result": {
            "eval_start": list(result.eval_start),
            "reports": [asdict(r) for r in result.reports],
            "train_seconds": result.train_seconds,
        },
        "wall_seconds": wall,
    }
    return Checkpoint(round=rounds_done, tensors=tensors, state=state)


def split_resume(role: SplitServerRole, ckpt: Checkpoint, *, mode: str, rounds: int) -> float:
    """Put ``ckpt`` into ``role`` (body LoRA, server optimizer, roster) and set its ``resume_from``;
    returns the run's seconds so far. ``ValueError`` (one line) when it does not fit."""
    try:
        return _resume(role, ckpt, mode=mode, rounds=rounds)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"not a split checkpoint: {type(exc).__name__}: {exc}") from exc


def _resume(role: SplitServerRole, ckpt: Checkpoint, *, mode: str, rounds: int) -> float:
    st, peers = ckpt.state, role.clients
    if st["algorithm"] != "split" or st["mode"] != mode or st["clients"] != len(peers):
        raise ValueError(f"checkpoint of {st['algorithm']} {st['mode']} with {st['clients']} clients does not fit")
    if not 0 <= ckpt.round <= rounds:
        raise ValueError(f"checkpoint after {ckpt.round} rounds; train.rounds = {rounds}")
    body = {n[len(BODY) :]: t for n, t in ckpt.tensors.items() if n.startswith(BODY)}
    avg = {n[len(AVG) :]: t for n, t in ckpt.tensors.items() if n.startswith(AVG)}
    why = mismatch(body, lora_state(role.parts.body))
    if why is not None:
        raise ValueError(f"checkpoint's body LoRA does not fit this config: {why}")
    roster = st["roster"]
    active = [peers[int(i)] for i in roster["active"]]
    dropped = {peers[int(i)]: str(why) for i, why in roster["dropped"]}
    rejoined = {peers[int(i)]: int(rnd) for i, rnd in roster["rejoined"]}
    if not active or sorted(active + list(dropped)) != sorted(peers):
        raise ValueError(f"checkpoint's roster {roster} does not fit {len(peers)} clients")
    states = {}
    for peer in active:
        k = peers.index(peer)
        prefix = f"client/{k}/"
        states[peer] = (
            {n[len(prefix) :]: t for n, t in ckpt.tensors.items() if n.startswith(prefix)},
            st["client_states"][str(k)],
        )
    res = st["result"]
    result = SplitServerResult(
        eval_start=[float(x) for x in res["eval_start"]],
        eval_end=[],
        reports=[StepReport(**r) for r in res["reports"]],
        train_seconds=float(res["train_seconds"]),
    )
    parts_of = server_parts(role)
    if "param_groups" in st["server_optimizer"]:  # a sequential checkpoint written before the modes resumed
        st = {**st, "server_optimizer": {"": st["server_optimizer"]}}
    if sorted(st["server_optimizer"]) != sorted(parts_of):
        raise ValueError(f"checkpoint holds {len(st['server_optimizer'])} server optimizers, this run {len(parts_of)}")
    # checked what can be; each optimizer load checks the rest before changing its optimizer
    for key, parts in parts_of.items():
        prefix = SERVER + key
        server_opt = {n[len(prefix) :]: t for n, t in ckpt.tensors.items() if n.startswith(prefix)}
        if key == "":  # one body: server/<opt.*> only
            server_opt = {n: t for n, t in server_opt.items() if n.startswith("opt.")}
        load_optimizer_state(parts.optimizer, server_opt, st["server_optimizer"][key], parts.scheduler)
    for parts in parts_of.values():  # server-hierarchical: every replica holds the average
        load_lora_state(parts.body, {n: t.to(role.device) for n, t in body.items()})
    role.roster.active[:] = active  # in place: the role holds these containers too
    role.roster.dropped.clear()
    role.roster.dropped.update(dropped)
    role.roster.rejoined.clear()
    role.roster.rejoined.update(rejoined)
    role.resume_from = SplitResume(result, ckpt.round, {n: t.clone() for n, t in avg.items()}, states)
    return float(st["wall_seconds"])
