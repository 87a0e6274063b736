"""FedCyBGD (Algorithms 1-2 of "Save It All"): cyclic block gradient descent with a compressed
download.

A partition pi gives every client one responsible block (a seeded random assignment; with more
clients than blocks, blocks are shared round-robin). Each round visits the participating clients
one at a time in a fresh random cyclic order: the server sends the client what it needs to bring
its copy of the model up to date (``compress.encode_download``: the responsible block whole; the
other changed blocks whole, or with layer drop and pruning when compression is on), the client
trains its responsible block for K steps and uploads only that block's change, and the server
applies it (theta[b] += eta * Delta^i) before the next client's turn. Download and upload bytes
are counted per round.

Resume: the server mirrors what every client holds, so a checkpoint (FedBCD's state plus each
client's mirror, ``mirror/<i>/<name>``, and the download sampler's RNG) puts a fresh client back
exactly: its first message is ``load`` with its mirror and its stream position.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from fedcore.aggregate import mismatch

from ..mailbox import Mailbox
from ..registry import Checkpoint, python_rng_state, restore_python_rng
from .compress import apply_download, encode_download
from .local import BlockTrainer, ParamDict, add_scaled_, snapshot
from .schedule import sample_participants
from .server import BCDServer, RoundRecord
from .timeline import Timeline, timeline_tensor


def responsible_blocks(clients: int, num_blocks: int, *, seed: int) -> list[int]:
    """pi: client i's responsible block. A seeded random order of the blocks, dealt round-robin
    (every block has an owner when clients >= blocks)."""
    order = list(range(num_blocks))
    random.Random(seed).shuffle(order)
    return [order[i % num_blocks] for i in range(clients)]


class FedCyBGDServer(BCDServer):
    """The cyclic server; ``records[r].block`` is -1 (each turn has its own block)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pi = responsible_blocks(len(self.peers), len(self.blocks), seed=self.config.seed)
        # what each client holds: the server applies to it exactly what the client applies
        self.mirrors = [snapshot(self.params, self.params) for _ in self.peers]
        self.turn_rng = random.Random(self.config.seed + 29)

    def run(self) -> list[RoundRecord]:
        if self._reload:
            self.reload_clients()
        for r in range(len(self.records), self.config.rounds):
            start = time.perf_counter()
            order = sample_participants(self.active, self.config.participation, self.rng)
            self.rng.shuffle(order)
            record = RoundRecord(r, -1, order)
            self.records.append(record)
            updated: set[int] = set()
            losses: list[tuple[float, float]] = []
            for i in order:
                if i in self.active and self.turn(r, i, updated, record, losses):
                    updated.add(self.pi[i])
                    record.included.append(i)
            if losses:
                record.train_loss = sum(w * x for w, x in losses) / sum(w for w, _ in losses)
            record.seconds = time.perf_counter() - start
            self._report(record)
        return self.records

    def turn(self, r: int, i: int, updated: set[int], record: RoundRecord, losses: list) -> bool:
        """Client i's turn: download, train, upload, apply. False if its update did not arrive."""
        b = self.pi[i]
        tensors, kinds = encode_download(
            self.params, self.mirrors[i], self.blocks, b, updated, self.config.compression, self.turn_rng
        )
        if not self.send(i, tensors, {"op": "turn", "round": r, "block": b, "kinds": kinds}, tag="model_down"):
            return False
        record.down_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        self.drawn[i] += self.config.local_steps
        apply_download(self.mirrors[i], tensors, kinds)
        msgs = self.collect(r, [i], b)
        if i not in msgs:
            return False
        msg = msgs[i]
        with self.timeline.span("server", "aggregate", r):
            add_scaled_(self.params, msg.tensors, self.config.eta)
            self.version += 1
            if self.history is not None:
                self.history[self.version] = snapshot(self.params, self.params)
        record.up_bytes += msg.nbytes
        losses.append((self.weight(i), float(msg.meta["loss"])))
        msg.release()
        return True

    # ---- checkpoint and resume: FedBCD's state, each client's mirror and the download sampler
    def checkpoint(self) -> Checkpoint:
        ckpt = super().checkpoint()
        ckpt.state["turn_rng"] = python_rng_state(self.turn_rng)
        for i in self.active:
            ckpt.tensors.update({f"{MIRROR}{i}/{n}": t.to("cpu", copy=True) for n, t in self.mirrors[i].items()})
        return ckpt

    def read_own_state(self, ckpt: Checkpoint) -> Callable[[], None]:
        turn_rng = restore_python_rng(random.Random(), ckpt.state["turn_rng"])
        mirrors: dict[int, ParamDict] = {}
        for i in ckpt.state["roster"]["active"]:
            prefix = f"{MIRROR}{int(i)}/"
            mirrors[int(i)] = {n[len(prefix) :]: t for n, t in ckpt.tensors.items() if n.startswith(prefix)}
            why = mismatch(mirrors[int(i)], self.params)
            if why is not None:
                raise ValueError(f"checkpoint's copy of client {i}'s model does not fit this config's model: {why}")

        def put() -> None:
            self.turn_rng = turn_rng
            for i, mirror in mirrors.items():
                self.mirrors[i] = {n: mirror[n].to(self.params[n].device, copy=True) for n in self.params}

        return put

    def load_message(self, i: int) -> tuple[ParamDict, dict[str, Any]]:
        return self.mirrors[i], super().load_message(i)[1]  # this client's copy, not the global model

    def refresh(self) -> int:
        """Bring every client's copy to the global model, uncompressed (before a final evaluation);
        returns the payload bytes sent (tag ``final_down``, apart from the rounds' downloads)."""
        total = 0
        for i in list(self.active):
            changed = [n for n in self.params if not self.params[n].equal(self.mirrors[i][n])]
            tensors = {n: self.params[n].clone() for n in changed}
            if self.send(
                i, tensors, {"op": "turn", "round": -1, "block": -1, "kinds": {"whole": changed}}, tag="final_down"
            ):
                apply_download(self.mirrors[i], tensors, {"whole": changed})
                total += sum(t.numel() * t.element_size() for t in tensors.values())
        return total


MIRROR = "mirror/"


class CyclicClient:
    """A FedCyBGD client: on each turn, apply the download, train the responsible block, upload
    its change. Its own copy of the block is refreshed whole at its next turn, so it does not
    apply its own update (an upload the server refuses leaves nothing to undo)."""

    def __init__(self, link: Any, trainer: BlockTrainer, *, index: int, timeline: Timeline | None = None):
        self.link, self.trainer, self.index = link, trainer, index
        self.mail = Mailbox(link)
        self.timeline = timeline or Timeline()
        self.who = f"client {index}"

    def run(self) -> None:
        while True:
            msg = self.mail.get(lambda m: m.meta.get("op") in ("turn", "eval", "load", "stop"))
            op, meta = msg.meta["op"], msg.meta
            if op == "load":  # a resumed server: the model this client held and its stream position
                self.trainer.load(msg.tensors, int(meta["drawn"]))
                msg.release()
            elif op == "turn":
                r, b = int(meta["round"]), int(meta["block"])
                with self.timeline.span(self.who, "apply", r):
                    apply_download(self.trainer.params, msg.tensors, meta["kinds"])
                msg.release()
                if b >= 0:
                    self.train_turn(r, b)
            elif op == "eval":
                msg.release()
                self.link.send_to("server", {}, {"op": "eval_result", "loss": self.trainer.evaluate()}, tag="control")
            else:
                msg.release()
                records = self.timeline.to_records()
                bye = {"timeline": timeline_tensor(records)}
                self.link.send_to("server", bye, {"op": "bye"}, tag="control").wait(30.0)  # delivered before we close
                return

    def train_turn(self, r: int, b: int) -> ParamDict:
        with self.timeline.span(self.who, "compute", r):
            delta, loss = self.trainer.train_delta(b)
        with self.timeline.span(self.who, "comm", r):
            self.link.send_to("server", delta, {"op": "delta", "round": r, "block": b, "loss": loss}, tag="delta_up")
        return delta
