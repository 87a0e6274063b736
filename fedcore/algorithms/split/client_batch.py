"""client-batch mode: every step, one body forward/backward on all clients' h_A at once.

The server sends every client a train order of ``avg_period`` steps; each client runs its head and
waits. Per step the server gathers the M h_A (padded to one batch, ``gather.py``), runs the body
once, sends each client its slice of h_B, gathers the M dh_B, weights client i's by its share of
the loss tokens (so the body gets the gradient of the token-mean loss over the whole gathered
batch: one centralized step on the concatenated batch), and returns each client the gradient of
its own loss with respect to its h_A. Head/tail LoRA is averaged every ``avg_period`` steps.
"""

from __future__ import annotations

from typing import Any

import torch

from fedcore.transport import PeerTimeout, TransportError

from .gather import gather_grads, gather_states, scatter
from .roles import SplitServerResult, SplitServerRole, StepReport, state_from


class ClientBatchServerRole(SplitServerRole):
    """The server of client-batch mode; evaluation and averaging as in sequential mode."""

    def run(self, *, rounds: int, local_steps: int, avg_period: int = 0) -> SplitServerResult:
        period = avg_period or local_steps
        self.average()
        result = SplitServerResult(eval_start=self.evaluate(), eval_end=[])
        step = 0
        for rnd in range(rounds):
            self.readmit(rnd)
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
                    for i, (loss, tokens, seconds) in enumerate(msg.meta["reports"]):
                        k = self.clients.index(peer)
                        result.reports.append(StepReport(rnd, k, step - chunk + i, loss, tokens, seconds))
                self.average()
                done += chunk
        result.eval_end = self.evaluate()
        self.stop()
        return result

    def batch_step(self) -> dict[str, tuple[float, int]]:
        """One gathered step over the clients still in the run: returns each one's (loss, tokens).

        A client lost before its h_A arrives is left out of the step; one lost after it has its
        rows carried through the body with zero gradient (it gets no dh_A)."""
        fwd = self._collect("fwd")
        peers = [p for p in self.clients if p in fwd]
        states = [state_from(fwd[p].tensors, needs_grad=True) for p in peers]
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
            self._send(peer, out, {"op": "h_B"}, tag="h_B", codec=self.codec_down)
        bwd = self._collect("bwd")
        counts = [_loss_tokens(bwd[p].meta, p) if p in bwd else 0 for p in peers]
        total = max(sum(counts), 1)
        weights = [c / total for c in counts]
        # a client without loss tokens (its loss is NaN) or lost meanwhile contributes zeros
        grads = [
            bwd[p].tensors["grad"] * w if w > 0 else torch.zeros_like(s.hidden)
            for p, s, w in zip(peers, states, weights, strict=True)
        ]
        h_b.hidden.backward(gather_grads(grads, pieces, h_b.hidden))
        for peer, state, w in zip(peers, states, weights, strict=True):
            if peer not in bwd:
                continue
            grad = state.hidden.grad
            grad = grad / w if grad is not None and w > 0 else torch.zeros_like(state.hidden)
            self._send(peer, {"grad": grad}, {"op": "dh_A"}, tag="dh_A", codec=self.codec_grad)
        self.parts.optimizer.step()
        self.parts.scheduler.step()
        self.parts.optimizer.zero_grad(set_to_none=True)
        return {p: (float(bwd[p].meta["loss"]), int(bwd[p].meta["tokens"])) for p in peers if p in bwd}

    def _send(self, peer: str, tensors: dict, meta: dict, **kw: Any) -> None:
        try:
            self.link.send_to(peer, tensors, meta, **kw)
        except TransportError as exc:
            if not self.drop_if_gone(exc, peer):
                raise

    def _collect(self, op: str) -> dict[str, Any]:
        """One ``op`` message from every client still in the run (any order); a client whose
        lease runs out meanwhile is dropped; anything else is a protocol error."""
        got: dict[str, Any] = {}
        while any(p not in got for p in self.active):
            try:
                msg = self.link.recv(self.timeout)
            except PeerTimeout as exc:
                if not self.drop_if_gone(exc):
                    raise
                continue
            if self.note_hello(msg) or msg.peer not in self.active:
                continue  # a returning client's hello, or a late message from a dropped client
            if msg.meta.get("op") != op or msg.peer in got:
                raise RuntimeError(f"expected '{op}' from every client, got '{msg.meta.get('op')}' from {msg.peer}")
            got[msg.peer] = msg
        return {p: m for p, m in got.items() if p in self.active}


def _loss_tokens(meta: dict[str, Any], peer: str) -> int:
    """The loss-token count a client reported, checked (it weights that client's gradient)."""
    value = meta.get("loss_tokens", meta.get("tokens"))
    if type(value) is not int or value < 0:
        raise RuntimeError(f"client {peer} reported loss_tokens={value!r}; expected an int >= 0")
    return value
