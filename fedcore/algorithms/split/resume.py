"""Checkpoints of a sequential split run and the way back from one.

After round r's average every client holds the same head/tail LoRA (the server's last average);
what else the run depends on lives on both sides: the body's LoRA, the server's AdamW and LR
schedule, and per client its AdamW and schedule, its noise stream and its data position
(``SplitClientRole.state``), which the server collects at each round's end. Tensor names:
``body/<lora>``, ``avg/<head.|tail.lora>``, ``server/opt.*``, ``client/<k>/<opt.*|rng.*>``.
Client-batch and server-hierarchical runs are not resumable yet (their replicas and gathers
would need the same care).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fedcore.aggregate import mismatch
from fedcore.lora import load_lora_state, lora_state

from ..registry import Checkpoint
from ..training_state import load_optimizer_state, optimizer_state
from .server_role import SplitResume, SplitServerResult, SplitServerRole, StepReport

BODY, AVG, SERVER = "body/", "avg/", "server/"

__all__ = ["split_checkpoint", "split_resume"]


def split_checkpoint(role: SplitServerRole, rounds_done: int, result: SplitServerResult, wall: float) -> Checkpoint:
    """The run after ``rounds_done`` rounds (call between rounds: it asks every client for its state)."""
    peers = role.clients
    tensors = {BODY + n: t.to("cpu") for n, t in lora_state(role.parts.body).items()}
    tensors.update({AVG + n: t.detach().to("cpu", copy=True) for n, t in role.last_average.items()})
    opt_tensors, opt_info = optimizer_state(role.parts.optimizer, role.parts.scheduler)
    tensors.update({SERVER + n: t for n, t in opt_tensors.items()})
    clients: dict[str, Any] = {}
    for peer, (client_tensors, state) in role.client_states().items():
        k = peers.index(peer)
        tensors.update({f"client/{k}/{n}": t.to("cpu") for n, t in client_tensors.items()})
        clients[str(k)] = state
    roster = role.roster
    state = {
        "algorithm": "split",
        "mode": "sequential",
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
    if mode != "sequential":
        raise ValueError(f"split mode {mode!r} does not support resume yet (sequential does)")
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
    server_opt = {n[len(SERVER) :]: t for n, t in ckpt.tensors.items() if n.startswith(SERVER)}
    # checked what can be; the optimizer load checks the rest before changing the optimizer
    load_optimizer_state(role.parts.optimizer, server_opt, st["server_optimizer"], role.parts.scheduler)
    load_lora_state(role.parts.body, {n: t.to(role.device) for n, t in body.items()})
    role.roster.active[:] = active  # in place: the role holds these containers too
    role.roster.dropped.clear()
    role.roster.dropped.update(dropped)
    role.roster.rejoined.clear()
    role.roster.rejoined.update(rejoined)
    role.resume_from = SplitResume(result, ckpt.round, {n: t.clone() for n, t in avg.items()}, states)
    return float(st["wall_seconds"])
