"""client-batch mode: every step, one body forward/backward on all clients' h_A at once.

The server sends every client a train order of ``avg_period`` steps; each client runs its head and
waits. Per step the server gathers the M h_A (padded to one batch, ``gather.py``), runs the body
once, sends each client its slice of h_B, gathers the M dh_B, weights client i's by its share of
the loss tokens (so the body gets the gradient of the token-mean loss over the whole gathered
batch: one centralized step on the concatenated batch), and returns each client the gradient of
its own loss with respect to its h_A. Head/tail LoRA is averaged every ``avg_period`` steps.

With ``split.micro_batches`` > 1 each client cuts its batch into micro-batches and sends every h_A
first (GPipe within one optimizer step). The server gathers micro-batch i from all clients, runs
the body and sends the h_B slices while the clients compute and send micro-batch i+1 and run their
tails on i-1; the backward passes follow micro-batch by micro-batch. Each client declares its
step's loss-token count with its first h_A, so the weights of the gathered loss are known before
any backward, and the step equals the unpipelined one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from fedcore.model import SplitState
from fedcore.transport import PeerTimeout, TransportError

from .gather import Piece, gather_grads, gather_states, scatter
from .server_role import SplitServerResult, SplitServerRole, StepReport
from .wire import ProtocolError, checked_grad, checked_state, meta_float, meta_int, state_meta

EARLY_LIMIT = 256  # messages a client may send ahead of the one the server waits for


class ClientBatchServerRole(SplitServerRole):
    """The server of client-batch mode; evaluation and averaging as in sequential mode."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._early: dict[str, deque] = {}  # peer -> messages that came before the server asked for them

    def run(self, *, rounds: int, local_steps: int, avg_period: int = 0) -> SplitServerResult:
        period = avg_period or local_steps
        result, first, started = self.begin()
        step = first * local_steps
        for rnd in range(first, rounds):
            self.readmit(rnd, steps_done=rnd * local_steps)
            done = 0
            while done < local_steps:
                chunk = min(period, local_steps - done)
                self.order_train(chunk, rnd)
                for _ in range(chunk):
                    for peer, (loss, tokens) in self.batch_step().items():
                        if self.on_step is not None:
                            self.on_step(StepReport(rnd, self.clients.index(peer), step, loss, tokens, 0.0))
                    step += 1
                finished = self._collect("done")
                for peer in [p for p in self.clients if p in finished]:  # client order, not arrival order
                    msg = finished[peer]
                    for i, (loss, tokens, seconds) in enumerate(self.reports_of(msg, chunk)):
                        k = self.clients.index(peer)
                        result.reports.append(StepReport(rnd, k, step - chunk + i, loss, tokens, seconds))
                self.average()
                done += chunk
            self.round_done(rnd, result, started)
        result.train_seconds = time.perf_counter() - started
        result.eval_end = self.evaluate()
        self.stop()
        return result

    def batch_step(self) -> dict[str, tuple[float, int]]:
        """One gathered step over the clients still in the run: returns each one's (loss, tokens).

        A client lost before its h_A arrives is left out of the step; one lost after it has its
        rows carried through the body with zero gradient (it gets no dh_A)."""
        fwd = self._collect("fwd", mb=0)
        if any("mbs" in m.meta for m in fwd.values()):
            return self._pipelined_batch_step(fwd)
        peers, states, pieces, h_b = self._forward(fwd)
        if h_b is None:
            return {}
        bwd = self._collect("bwd", mb=0, peers=peers)
        declared = self._checked(bwd, _loss_tokens)
        bwd = {p: m for p, m in bwd.items() if p in declared}
        counts = [declared.get(p, 0) for p in peers]
        total = max(sum(counts), 1)
        self._backward(peers, states, pieces, h_b, bwd, dict(zip(peers, [c / total for c in counts], strict=True)))
        self._optimizer_step()
        return self._reports(bwd)

    def _pipelined_batch_step(self, first: dict[str, Any]) -> dict[str, tuple[float, int]]:
        """One optimizer step over micro-batches (GPipe): every micro-batch's gathered forward,
        then their backwards in order. Client c's dh_B (of its loss weighted by its micro-batch's
        share of its loss tokens N_c) is scaled by N_c / sum N, which makes the body gradient the
        token mean over everything gathered; each client gets dh_A of its own loss. A client lost
        mid-step keeps what it already contributed, and the others' weights stay as declared."""
        counts = self._checked(first, _micro_count)
        declared = self._checked({p: m for p, m in first.items() if p in counts}, _loss_tokens)
        first = {p: m for p, m in first.items() if p in declared}
        if not first:
            return {}
        total = max(sum(declared.values()), 1)
        weights = {p: n / total for p, n in declared.items()}
        forwards = []
        for i in range(max(counts.values())):
            fwd = first if i == 0 else self._collect("fwd", mb=i, peers=[p for p, c in counts.items() if c > i])
            peers, states, pieces, h_b = self._forward(fwd)
            if h_b is not None:
                forwards.append((i, peers, states, pieces, h_b))
        last: dict[str, Any] = {}
        for i, peers, states, pieces, h_b in forwards:
            bwd = self._collect("bwd", mb=i, peers=peers)
            self._backward(peers, states, pieces, h_b, bwd, weights)
            last.update(bwd)
        self._optimizer_step()
        return self._reports(last)

    def _reports(self, bwd: dict[str, Any]) -> dict[str, tuple[float, int]]:
        """Each client's (loss, tokens) from its last dh_B message (a client whose numbers are
        malformed is dropped)."""
        out = {}
        for peer, msg in bwd.items():
            if peer not in self.active:
                continue
            try:
                out[peer] = (meta_float(msg.meta, "loss"), meta_int(msg.meta, "tokens", low=0, high=2**62, default=0))
            except ProtocolError as exc:
                self.drop_if_gone(exc, peer)
        return out

    def _forward(self, fwd: dict[str, Any]) -> tuple[list[str], list[SplitState], list[Piece], SplitState | None]:
        """The body on the gathered h_A in ``fwd`` (client order); each client gets its slice of
        h_B. A client whose h_A is malformed is dropped and left out. Returns the clients served,
        their states, their pieces and the body output (None when no client is left)."""
        peers, states = [], []
        for peer in [p for p in self.clients if p in fwd]:
            try:
                msg = fwd[peer]
                state = checked_state(
                    msg.tensors, msg.meta, hidden_size=self.hidden_size, needs_grad=True, device=self.device
                )
            except ProtocolError as exc:
                self.drop_if_gone(exc, peer)
                continue
            peers.append(peer)
            states.append(state)
        if not peers:
            return [], [], [], None
        gathered, pieces = gather_states(states)
        h_b = self.parts.body(gathered)
        mask = gathered.attention_mask
        assert mask is not None  # gather_states always builds the padding mask
        for peer, piece, hidden in zip(peers, pieces, scatter(h_b.hidden, pieces), strict=True):
            rows = slice(piece.start, piece.stop)
            out = {
                "hidden": hidden,
                "position_ids": gathered.position_ids[rows, : piece.steps],
                "attention_mask": mask[rows, : piece.steps],
            }
            self._send(peer, out, state_meta(op="h_B"), tag="h_B", codec=self.codec_down)
        return peers, states, pieces, h_b

    def _backward(
        self,
        peers: list[str],
        states: list[SplitState],
        pieces: list[Piece],
        h_b: SplitState,
        bwd: dict[str, Any],
        weights: dict[str, float],
    ) -> None:
        """Backward through the body with each client's dh_B scaled by its weight (a client
        without loss tokens, whose loss is NaN, lost meanwhile or whose dh_B is malformed
        contributes zeros); each client that sent dh_B gets the gradient of its own loss with
        respect to its h_A."""
        grads = []
        for peer, state, hidden in zip(peers, states, scatter(h_b.hidden, pieces), strict=True):
            grad = torch.zeros_like(state.hidden)
            if peer in bwd and weights[peer] > 0:
                try:
                    grad = checked_grad(bwd[peer].tensors, hidden) * weights[peer]
                except ProtocolError as exc:
                    self.drop_if_gone(exc, peer)
                    bwd.pop(peer)
            grads.append(grad)
        h_b.hidden.backward(gather_grads(grads, pieces, h_b.hidden))
        for peer, state in zip(peers, states, strict=True):
            if peer not in bwd:
                continue
            own, w = state.hidden.grad, weights[peer]
            dh_a = own / w if own is not None and w > 0 else torch.zeros_like(state.hidden)
            self._send(peer, {"grad": dh_a}, {"op": "dh_A"}, tag="dh_A", codec=self.codec_grad)
            bwd[peer].release()

    def _checked(self, msgs: dict[str, Any], parse: Callable[[dict[str, Any]], int]) -> dict[str, int]:
        """``parse(meta)`` of each message; a client whose message fails the check is dropped
        (a misbehaving client must not stop the others)."""
        values = {}
        for peer, msg in msgs.items():
            try:
                values[peer] = parse(msg.meta)
            except ProtocolError as exc:
                self.drop_if_gone(exc, peer)
        return values

    def _optimizer_step(self) -> None:
        self.parts.optimizer.step()
        self.parts.scheduler.step()
        self.parts.optimizer.zero_grad(set_to_none=True)

    def _send(self, peer: str, tensors: dict, meta: dict, **kw: Any) -> None:
        try:
            self.link.send_to(peer, tensors, meta, **kw)
        except TransportError as exc:
            if not self.drop_if_gone(exc, peer):
                raise

    def _collect(self, op: str, *, mb: int | None = None, peers: list[str] | None = None) -> dict[str, Any]:
        """One ``op`` message (of micro-batch ``mb``, when given) from each of ``peers`` (default:
        every client still in the run), in any order. A client may run ahead (its next h_A or
        dh_B while others are still awaited): such messages wait in order, up to ``EARLY_LIMIT``.
        A client whose lease runs out meanwhile is dropped, and so is one whose message breaks the
        protocol order (the others go on)."""
        wanted = list(self.active if peers is None else peers)
        got: dict[str, Any] = {}

        def take(peer: str) -> None:
            queue = self._early.get(peer)
            if not queue or peer in got:
                return
            msg = queue[0]
            if msg.meta.get("op") != op or (mb is not None and msg.meta.get("mb", 0) != mb):
                why = (
                    f"expected '{op}' (micro-batch {mb}), got '{msg.meta.get('op')}' (micro-batch {msg.meta.get('mb')})"
                )
                self.drop_if_gone(ProtocolError(why), peer)
                return
            got[peer] = queue.popleft()

        for peer in wanted:
            take(peer)
        while any(p not in got for p in wanted if p in self.active):
            try:
                msg = self.link.recv(self.timeout)
            except PeerTimeout as exc:
                if not self.drop_if_gone(exc):
                    raise
                continue
            if self.note_hello(msg) or msg.peer not in self.active:
                continue  # a returning client's hello, or a late message from a dropped client
            queue = self._early.setdefault(msg.peer, deque())
            if len(queue) >= EARLY_LIMIT:
                self.drop_if_gone(ProtocolError(f"more than {EARLY_LIMIT} messages ahead of the step"), msg.peer)
                continue
            queue.append(msg)
            if msg.peer in wanted:
                take(msg.peer)
        for peer in [p for p in self._early if p not in self.active]:
            del self._early[peer]  # a dropped client's early messages go with it
        return {p: m for p, m in got.items() if p in self.active}


def _loss_tokens(meta: dict[str, Any]) -> int:
    """The loss-token count a client reported, checked (it weights that client's gradient)."""
    return meta_int(meta, "loss_tokens", low=0, high=2**62, default=meta.get("tokens"))


def _micro_count(meta: dict[str, Any]) -> int:
    """The number of micro-batches a client announced for its step, checked."""
    return meta_int(meta, "mbs", low=1, high=EARLY_LIMIT // 2, default=1)
