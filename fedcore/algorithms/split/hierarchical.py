"""server-hierarchical mode: one body replica per client, trained concurrently, averaged every period.

Each replica (body + LoRA, its own AdamW and LR schedule; frozen base weights shared, not copied)
serves one client on its own worker thread, so the replicas' forward and backward passes overlap
(torch releases the GIL in its kernels; on a GPU each worker runs on its own CUDA stream). Every
``avg_period`` steps the server waits for all clients, then replaces every replica's LoRA with
their FedAvg (weighted by training samples), and the clients' head/tail LoRA likewise.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import queue
import threading
import time
from typing import Any

import torch

from fedcore.aggregate import weighted_average
from fedcore.lora import load_lora_state, lora_parameters, lora_state
from fedcore.transport import PeerTimeout

from .server_role import SplitServerResult, SplitServerRole, StepReport
from .step import ServerParts
from .wire import ProtocolError, checked_grad, checked_state, state_meta, state_tensors


def replicate(parts: ServerParts, count: int, make_optimizer, make_schedule) -> list[ServerParts]:
    """``count`` replicas of ``parts``: the first is ``parts``; the others deep-copy the body but
    share its frozen tensors, and get their own optimizer and schedule from the factories."""
    replicas = [parts]
    frozen = {id(p): p for p in parts.body.parameters() if not p.requires_grad}
    for _ in range(count - 1):
        body = copy.deepcopy(parts.body, memo=dict(frozen))
        opt = make_optimizer(lora_parameters(body).values())
        replicas.append(ServerParts(body, opt, make_schedule(opt)))
    return replicas


class HierarchicalServerRole(SplitServerRole):
    """The server of server-hierarchical mode; ``parts`` (replica 0) answers evaluation."""

    def __init__(self, link: Any, replicas: list[ServerParts], clients: list[str], weights: list[float], **kw):
        if len(replicas) != len(clients):
            raise ValueError(f"one replica per client: {len(replicas)} replicas for {len(clients)} clients")
        super().__init__(link, replicas[0], clients, weights, **kw)
        self.replicas = dict(zip(clients, replicas, strict=True))
        self._misbehaved: collections.deque = collections.deque()  # (peer, ProtocolError) from the workers

    def run(self, *, rounds: int, local_steps: int, avg_period: int = 0) -> SplitServerResult:
        period = avg_period or local_steps
        result, first, started = self.begin()
        inboxes: dict[str, queue.Queue] = {peer: queue.Queue() for peer in self.clients}
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=self._worker, args=(peer, inboxes[peer], errors), daemon=True)
            for peer in self.clients
        ]
        for w in workers:
            w.start()
        step = first * local_steps
        try:
            for rnd in range(first, rounds):
                self.readmit(rnd, steps_done=rnd * local_steps)
                done = 0
                while done < local_steps:
                    chunk = min(period, local_steps - done)
                    self.order_train(chunk, rnd)
                    finished = self._route_until_done(inboxes, errors)
                    for q in inboxes.values():
                        q.join()  # every replica's last optimizer step is in
                    for peer in [p for p in self.clients if p in finished]:  # client order, not arrival
                        msg, k = finished[peer], self.clients.index(peer)
                        for i, (loss, tokens, seconds) in enumerate(self.reports_of(msg, chunk)):
                            report = StepReport(rnd, k, step + i, loss, tokens, seconds)
                            result.reports.append(report)
                            if self.on_step is not None:
                                self.on_step(report)
                    step += chunk
                    self.average_replicas()
                    self.average()
                    done += chunk
                self.round_done(rnd, result, started)
        finally:
            for q in inboxes.values():
                q.put(None)
            for w in workers:
                w.join(timeout=30)
        result.train_seconds = time.perf_counter() - started
        result.eval_end = self.evaluate()
        self.stop()
        return result

    def average_replicas(self) -> None:
        """FedAvg of the replicas' LoRA (weighted by the clients' samples), loaded into every replica."""
        peers = [p for p in self.clients if p in self.active]  # a dropped client's replica is left out
        states = [lora_state(self.replicas[p].body) for p in peers]
        avg = weighted_average(states, [self.weights[self.clients.index(p)] for p in peers])
        for parts in self.replicas.values():
            load_lora_state(parts.body, avg)

    def _route_until_done(self, inboxes: dict[str, queue.Queue], errors: list[BaseException]) -> dict[str, Any]:
        finished: dict[str, Any] = {}
        deadline = time.monotonic() + self.timeout
        while any(p not in finished for p in self.active):
            while self._misbehaved:  # a client whose message broke the protocol leaves; the others go on
                peer, exc = self._misbehaved.popleft()
                self.drop_if_gone(exc, peer)
            if errors:  # checked every poll: a failed replica surfaces at once, not after the timeout
                raise RuntimeError("a body replica failed") from errors[0]
            try:
                msg = self.link.recv(min(1.0, max(0.0, deadline - time.monotonic())))
            except PeerTimeout as exc:
                if self.drop_if_gone(exc):
                    continue
                if time.monotonic() >= deadline:
                    raise
                continue
            if self.note_hello(msg) or msg.peer not in self.active:
                continue  # a returning client's hello, or a late message from a dropped client
            deadline = time.monotonic() + self.timeout
            op = msg.meta.get("op")
            if op in ("fwd", "bwd") and msg.peer in inboxes:
                inboxes[msg.peer].put(msg)
            elif op == "done" and msg.peer in inboxes and msg.peer not in finished:
                finished[msg.peer] = msg
            else:
                self.drop_if_gone(ProtocolError(f"unexpected '{op}' during a server-hierarchical chunk"), msg.peer)
        return {p: m for p, m in finished.items() if p in self.active}

    def _worker(self, peer: str, inbox: queue.Queue, errors: list[BaseException]) -> None:
        parts = self.replicas[peer]
        stream = torch.cuda.Stream() if torch.cuda.is_available() else None
        pending: dict[int, tuple] = {}  # micro-batch -> (body input, body output)
        while True:
            msg = inbox.get()
            if msg is None:
                inbox.task_done()
                return
            try:
                if stream is not None:  # weights averaged on the default stream must be in first
                    stream.wait_stream(torch.cuda.default_stream(stream.device))
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    if msg.meta["op"] == "fwd":
                        trains = bool(msg.meta.get("head_trains"))
                        body_in = checked_state(
                            msg.tensors, msg.meta, hidden_size=self.hidden_size, needs_grad=trains, device=parts.device
                        )
                        h_b = parts.body(body_in)
                        pending[msg.meta.get("mb", 0)] = (body_in, h_b)
                        out = state_tensors(h_b)
                        if stream is not None:
                            stream.synchronize()
                        self.link.send_to(peer, out, state_meta(op="h_B"), tag="h_B", codec=self.codec_down)
                    else:
                        mb = msg.meta.get("mb", 0)
                        if mb not in pending:
                            raise ProtocolError(f"dh_B for micro-batch {mb} without its h_A")
                        body_in, h_b = pending[mb]
                        grad_in = checked_grad(msg.tensors, h_b.hidden)
                        del pending[mb]
                        h_b.hidden.backward(grad_in)
                        grad = body_in.hidden.grad if body_in.hidden.grad is not None else torch.zeros(0)
                        if msg.meta.get("last", True):  # the step closes with its last micro-batch
                            parts.optimizer.step()
                            parts.scheduler.step()
                            parts.optimizer.zero_grad(set_to_none=True)
                        if stream is not None:
                            stream.synchronize()
                        self.link.send_to(peer, {"grad": grad}, {"op": "dh_A"}, tag="dh_A", codec=self.codec_grad)
            except ProtocolError as exc:  # this client leaves the run (the routing loop drops it)
                self._misbehaved.append((peer, exc))
            except BaseException as exc:  # surfaced by the routing loop
                errors.append(exc)
            finally:
                inbox.task_done()
