"""A client of FedBCD and ParaBlock (Algorithm 2 of the ParaBlock paper).

FedBCD (``staleness=0``): on round t's plan, train block b_t for K steps (Delta_t^i), upload it,
wait for the aggregate Delta_t and apply theta[b_t] += eta * Delta_t. Computation and
communication take turns.

ParaBlock (``staleness=k >= 1``): on round t's plan a communication thread uploads Delta_{t-1}^i
and waits for the aggregate Delta_{t-k}, while this thread trains b_t. When both are done the
client applies its own update theta[b_t] += eta * Delta_t^i and the correction
theta[b_{t-k}] += eta * (Delta_{t-k} - Delta_{t-k}^i) (Delta^i = 0 for a round it did not train,
and its own update is rolled back the same way when the server left it out). So after round t
the local model is the server's global model through aggregate t-k plus eta times the client's
own updates of rounds t-k+1..t (``expected_local``): Eq. 3-4, checked in the tests every round.
On ``sync`` it uploads its last update and applies every aggregate still due: then it equals
the global model.

The client keeps its own copy of that global model (``global_params``, updated with exactly the
server's additions, so it is the server's bit for bit) and rebuilds the blocks an update touched
as ``global + eta * (own updates in round order)``. The local model is then a function of the
global model and the updates in flight, exactly Eq. 3-4 and nothing of the order in which the
corrections came: no rounding drift from the server's model, and a ParaBlock checkpoint (the
global model and the updates in flight) restores the client bit for bit. It costs one more copy
of the block parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from fedcore.transport.overlap import OverlappedSender

from ..mailbox import Mailbox, op_is
from .local import BlockTrainer, ParamDict, add_scaled_, snapshot
from .server import PENDING
from .timeline import Timeline, timeline_tensor


class BlockClient:
    """Client ``index`` of FedBCD (``staleness=0``) or ParaBlock (``staleness >= 1``).

    ``on_round(client, t)`` (optional) runs after each round's updates are applied (tests check
    the invariant there). ``scores``: report per-block squared gradient norms with each upload
    (the gradient-based schedule); costs one backward through every block per round.
    """

    def __init__(
        self,
        link: Any,
        trainer: BlockTrainer,
        *,
        index: int,
        eta: float = 1.0,
        staleness: int = 1,
        scores: bool = False,
        timeline: Timeline | None = None,
        on_round: Callable[[BlockClient, int], None] | None = None,
        agg_timeout: float | None = None,
    ):
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        self.link, self.trainer, self.index, self.eta, self.staleness = link, trainer, index, eta, staleness
        self.want_scores = scores
        self.mail = Mailbox(link)
        self.timeline = timeline or Timeline()
        self.who = f"client {index}"
        self.on_round = on_round
        self.agg_timeout = agg_timeout
        self.pending: dict[int, tuple[int, ParamDict]] = {}  # round -> (block, Delta^i) not yet aggregated
        self.unsent: dict[int, tuple[int, ParamDict, dict[str, Any]]] = {}  # round -> upload not yet sent
        self.next_agg = 0  # the next round whose aggregate this client applies
        # ParaBlock: the global model through aggregate next_agg - 1 (the local model is rebuilt from it)
        self.global_params = snapshot(trainer.params, trainer.params) if staleness else None
        self.last_round = -1
        self._comm = ThreadPoolExecutor(1, thread_name_prefix=f"fedcore-bcd-comm-{index}") if staleness else None
        # uploads: CUDA deltas are staged through two pinned slots on a side stream (double buffering)
        self.sender = OverlappedSender(link)

    # ---- the loop
    def run(self) -> None:
        """Obey the server until ``stop``."""
        try:
            while True:
                msg = self.mail.get(lambda m: m.meta.get("op") in ("plan", "sync", "eval", "load", "stop"))
                op, meta = msg.meta["op"], msg.meta
                if op == "load":  # a resumed server: its global model, where this stream was, the next round
                    self.load(msg.tensors, meta)
                msg.release()  # load copied what it needed
                if op == "plan":
                    self.round(int(meta["round"]), int(meta["block"]), bool(meta["train"]))
                elif op == "sync":
                    self.sync()
                elif op == "eval":
                    self.link.send_to(
                        "server", {}, {"op": "eval_result", "loss": self.trainer.evaluate()}, tag="control"
                    )
                elif op == "stop":
                    records = self.timeline.to_records()
                    bye = {"timeline": timeline_tensor(records)}
                    # wait until it was delivered: closing the link first could lose it
                    self.link.send_to("server", bye, {"op": "bye"}, tag="control").wait(30.0)
                    return
        finally:
            if self._comm is not None:
                self._comm.shutdown(wait=False)
            self.sender.close()

    def load(self, tensors: ParamDict, meta: dict[str, Any]) -> None:
        """A resumed server's first message: the global model, the stream position, the next
        aggregate due and (ParaBlock) this client's update still in flight, ``pending/<name>``
        with its upload's meta, applied again and uploaded with the next round's plan."""
        model = {n: t for n, t in tensors.items() if not n.startswith(PENDING)}
        self.trainer.load(model, int(meta["drawn"]))
        self.next_agg, self.last_round = int(meta["next_agg"]), int(meta["last_round"])
        self.pending.clear()
        self.unsent.clear()
        if self.global_params is not None:
            self.global_params = snapshot(self.trainer.params, self.trainer.params)
        upload = meta.get("pending")
        if upload is not None:
            delta = {n[len(PENDING) :]: t.clone() for n, t in tensors.items() if n.startswith(PENDING)}
            rnd, block = int(upload["round"]), int(upload["block"])
            self.pending[rnd] = (block, delta)
            self.unsent[rnd] = (block, delta, dict(upload))
            self.rebuild(delta)

    def round(self, t: int, block: int, train: bool) -> None:
        self.last_round = t
        if self.staleness == 0:
            delta = self.compute(t, block) if train else None
            agg = self.communicate(t, send=t, wait=t)
            with self.timeline.span(self.who, "apply", t):
                self.apply_aggregate(agg)
        else:
            assert self._comm is not None
            comm = self._comm.submit(self.communicate, t, send=t - 1, wait=t - self.staleness)
            try:
                delta = self.compute(t, block) if train else None
            finally:
                agg = comm.result()
            with self.timeline.span(self.who, "apply", t):
                touched: list[ParamDict] = []
                if delta is not None:
                    self.pending[t] = (block, delta)
                    touched.append(delta)
                if agg is not None:
                    own = self.pending.pop(agg.meta["round"], None)
                    touched += [agg.tensors] + ([own[1]] if own else [])
                    self.apply_to_global(agg)
                self.rebuild(*touched)
                if agg is not None:
                    agg.release()
        if self.on_round is not None:
            self.on_round(self, t)

    def sync(self) -> None:
        """ParaBlock's closing step: upload the last update, apply every aggregate still due."""
        t = self.last_round + 1
        with self.timeline.span(self.who, "comm", t):
            self.send_upload(t - 1)
            aggs = [self.receive_aggregate(s) for s in range(self.next_agg, t)]
        with self.timeline.span(self.who, "apply", t):
            touched: list[ParamDict] = []
            for agg in aggs:
                own = self.pending.pop(agg.meta["round"], None)
                touched += [agg.tensors] + ([own[1]] if own else [])
                self.apply_to_global(agg)
            self.rebuild(*touched)
            for agg in aggs:
                agg.release()
        if self.on_round is not None:
            self.on_round(self, t)

    # ---- the two threads' work
    def compute(self, t: int, block: int) -> ParamDict:
        with self.timeline.span(self.who, "compute", t):
            scores = self.trainer.block_scores() if self.want_scores else None
            delta, loss = self.trainer.train_delta(block)
        meta: dict[str, Any] = {"op": "delta", "round": t, "block": block, "loss": loss}
        if scores is not None:
            meta["scores"] = scores
        self.unsent[t] = (block, delta, meta)
        return delta

    def communicate(self, t: int, *, send: int, wait: int) -> Any:
        """During round ``t``: upload round ``send``'s delta (if this client trained then) and
        return round ``wait``'s aggregate message (None if ``wait`` < 0)."""
        with self.timeline.span(self.who, "comm", t):
            self.send_upload(send)
            return self.receive_aggregate(wait) if wait >= 0 else None

    def send_upload(self, rnd: int) -> None:
        item = self.unsent.pop(rnd, None)
        if item is not None:
            _, delta, meta = item
            self.sender.send(delta, meta, peer="server", tag="delta_up").result()  # raises what the send raised

    def receive_aggregate(self, rnd: int) -> Any:
        assert rnd == self.next_agg, f"aggregate {rnd} requested, {self.next_agg} due"
        msg = self.mail.get(op_is("agg", rnd), timeout=self.agg_timeout)
        self.next_agg += 1
        return msg

    # ---- updates
    @torch.no_grad()
    def apply_aggregate(self, agg: Any) -> None:
        """FedBCD: theta[b_t] += eta * Delta_t, the server's own addition (so both stay equal)."""
        if agg.tensors:
            add_scaled_(self.trainer.params, agg.tensors, self.eta)
        agg.release()

    def apply_to_global(self, agg: Any) -> None:
        """ParaBlock: the client's copy of the global model += eta * Delta_s, as the server does."""
        assert self.global_params is not None
        if agg.tensors:
            add_scaled_(self.global_params, agg.tensors, self.eta)

    @torch.no_grad()
    def rebuild(self, *touched: ParamDict) -> None:
        """Local = global + eta * (own updates in flight, in round order), on the names in
        ``touched`` (an update or aggregate that just changed them); the rest is unchanged."""
        assert self.global_params is not None
        names = {n for d in touched for n in d}
        for n in names:
            self.trainer.params[n].copy_(self.global_params[n])
        for _, delta in self.pending.values():  # dicts keep insertion (= round) order
            add_scaled_(self.trainer.params, {n: d for n, d in delta.items() if n in names}, self.eta)


def expected_local(global_params: ParamDict, pending: dict[int, tuple[int, ParamDict]], eta: float) -> ParamDict:
    """ParaBlock's invariant (Eq. 3-4): the global model plus eta times the client's own updates
    not yet aggregated. Returns new tensors."""
    out = {n: p.clone() for n, p in global_params.items()}
    for _, delta in pending.values():
        add_scaled_(out, delta, eta)
    return out
