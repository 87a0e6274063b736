"""client-batch and server-hierarchical: gathering is exact, a client-batch step is the centralized
step on the concatenated batch, and replicas share frozen weights and average as FedAvg."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.client_batch import ClientBatchServerRole
from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.gather import gather_grads, gather_states, scatter
from fedcore.algorithms.split.hierarchical import replicate
from fedcore.algorithms.split.setup import build_split, client_parts, lr_schedule, server_parts
from fedcore.algorithms.split.wire import state_from, state_meta, state_tensors
from fedcore.data import CharTokenizer
from fedcore.lora import lora_parameters, lora_state
from fedcore.model import SplitState

CONFIG = {
    "model": {"hidden_size": 32, "num_layers": 4},
    "lora": {"r": 4, "alpha": 8.0},
    "noise": {"std": 0.0},
    "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
    "train": {"clients": 2, "rounds": 1, "local_steps": 1, "batch_size": 4},
}


def _batch(gen, batch, steps, vocab, pad_from=None):
    ids = torch.randint(4, vocab, (batch, steps), generator=gen)
    mask = torch.ones(batch, steps, dtype=torch.long)
    labels = ids.clone()
    if pad_from is not None:  # right padding in the last row
        mask[-1, pad_from:] = 0
        labels[-1, pad_from:] = -100
    labels[:, :2] = -100  # an untrained prompt
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _setup():
    config = config_from_dict(CONFIG)
    tok = CharTokenizer()
    sm = build_split(config, tok)
    server = server_parts(config, sm)
    clients = [client_parts(config, sm, k) for k in range(2)]
    for c in clients[1:]:  # identical starting adapters, as after the first FedAvg
        for part in ("head", "tail"):
            getattr(c, part).load_state_dict(getattr(clients[0], part).state_dict())
    gen = torch.Generator().manual_seed(0)
    batches = [_batch(gen, 3, 9, tok.vocab_size, pad_from=6), _batch(gen, 2, 14, tok.vocab_size)]
    return sm, server, clients, batches


def test_gathered_body_equals_each_client_alone():
    sm, server, clients, batches = _setup()
    states = [c.head(b["input_ids"], b["attention_mask"]) for c, b in zip(clients, batches, strict=True)]
    gathered, pieces = gather_states(states)
    assert gathered.hidden.shape[:2] == (5, 14)
    with torch.no_grad():
        together = scatter(server.body(gathered).hidden, pieces)
        for state, got in zip(states, together, strict=True):
            alone = server.body(SplitState(state.hidden, state.position_ids, state.attention_mask)).hidden
            valid = state.attention_mask.bool()
            torch.testing.assert_close(got[valid], alone[valid], rtol=1e-5, atol=1e-6)
    grads = [torch.randn(3, 9, 32), torch.randn(2, 14, 32)]
    back = scatter(gather_grads(grads, pieces, gathered.hidden), pieces)
    assert all(torch.equal(a, b) for a, b in zip(back, grads, strict=True))


def test_client_batch_step_is_the_centralized_step_on_the_concatenated_batch():
    sm, server, clients, batches = _setup()
    reference_body = copy.deepcopy(server.body)
    hub = InProcessHub()
    names = ["c0", "c1"]
    role = ClientBatchServerRole(hub.server(), server, names, [1.0, 1.0], timeout=30)
    links = [hub.endpoint(n) for n in names]
    recorded: dict[str, torch.Tensor] = {}

    def record_grads(optimizer, args, kwargs):  # before the step (a hook: step itself stays torch's)
        for name, p in lora_parameters(server.body).items():
            recorded[name] = p.grad.detach().clone()

    server.optimizer.register_step_pre_hook(record_grads)
    worker = threading.Thread(target=role.batch_step)
    worker.start()
    heads = []
    for link, c, b in zip(links, clients, batches, strict=True):
        h_a = c.head(b["input_ids"], b["attention_mask"])
        heads.append(h_a)
        link.send({k: v for k, v in state_tensors(h_a).items()}, state_meta(op="fwd", head_trains=True), tag="h_A")
    received_dh = []
    for link, c, b in zip(links, clients, batches, strict=True):
        h_b = link.recv(10)
        tail_in = state_from(h_b.tensors, h_b.meta, needs_grad=True)
        loss = c.tail(tail_in, labels=b["labels"]).loss
        loss.backward()
        meta = {"op": "bwd", "loss": float(loss.detach()), "tokens": int(b["attention_mask"].sum()),
                "loss_tokens": int((b["labels"][:, 1:] != -100).sum())}  # fmt: skip
        link.send({"grad": tail_in.hidden.grad}, meta, tag="dh_B")
    for link in links:
        received_dh.append(link.recv(10).tensors["grad"])
    worker.join(10)
    assert not worker.is_alive()

    # reference: each client alone through a copy of the body; the centralized loss is the
    # token-weighted mean of the clients' mean losses (the mean over all loss tokens)
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    params = list(lora_parameters(reference_body).values())
    total = [torch.zeros_like(p) for p in params]
    for k, (c, b) in enumerate(zip(clients, batches, strict=True)):
        h_a = heads[k]
        leaf = h_a.hidden.detach().clone().requires_grad_(True)
        h_b = reference_body(SplitState(leaf, h_a.position_ids, h_a.attention_mask))
        tail = copy.deepcopy(c.tail)
        loss = tail(SplitState(h_b.hidden, h_b.position_ids, h_b.attention_mask), labels=b["labels"]).loss
        grads = torch.autograd.grad(loss, [leaf, *params])
        torch.testing.assert_close(received_dh[k], grads[0], rtol=1e-5, atol=1e-7)
        for acc, g in zip(total, grads[1:], strict=True):
            acc += g * counts[k] / sum(counts)
    for (name, got), want in zip(recorded.items(), total, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)


def test_replicas_share_frozen_weights_and_average_as_fedavg():
    config = config_from_dict(CONFIG)
    sm = build_split(config, CharTokenizer())
    parts = server_parts(config, sm)
    replicas = replicate(
        parts, 3, lambda ps: torch.optim.AdamW(ps, lr=0.01), lambda opt: lr_schedule(opt, total_steps=10)
    )
    frozen = [p.data_ptr() for p in replicas[0].body.parameters() if not p.requires_grad]
    assert frozen
    for r in replicas[1:]:  # the frozen base is shared, not copied
        assert [p.data_ptr() for p in r.body.parameters() if not p.requires_grad] == frozen
    for i, r in enumerate(replicas):
        assert r.optimizer is not replicas[0].optimizer or i == 0
        with torch.no_grad():
            for p in lora_parameters(r.body).values():
                p.fill_(float(i))
    from fedcore.algorithms.split.hierarchical import HierarchicalServerRole

    role = HierarchicalServerRole(InProcessHub().server(), replicas, ["a", "b", "c"], [1.0, 1.0, 2.0])
    role.average_replicas()
    expected = (0 * 1 + 1 * 1 + 2 * 2) / 4
    for r in replicas:
        for v in lora_state(r.body).values():
            assert torch.allclose(v, torch.full_like(v, expected))
    with pytest.raises(ValueError, match="one replica per client"):
        HierarchicalServerRole(InProcessHub().server(), replicas, ["a", "b"], [1.0, 1.0])
