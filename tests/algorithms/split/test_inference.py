"""Split inference through the roles: KV caches on both sides, only new tokens cross, and the
tokens equal local split generation (and recomputation without caches)."""

from __future__ import annotations

import dataclasses
import threading

import torch
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.client_role import remote_body
from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.server_role import SplitServerRole
from fedcore.algorithms.split.setup import build_split, client_parts, server_parts
from fedcore.data import CharTokenizer
from fedcore.model import GenerationTrace, generate_through, split_generate


def test_remote_generation_equals_local_with_and_without_cache():
    config = config_from_dict({"model": {"hidden_size": 32, "num_layers": 4}, "lora": {"r": 4, "alpha": 8.0}})
    tok = CharTokenizer()
    sm = build_split(config, tok)
    server = server_parts(config, sm)
    client = client_parts(config, sm, 0)
    hub = InProcessHub()
    role = SplitServerRole(hub.server(), server, ["c0"], [1.0], timeout=30)
    link = hub.endpoint("c0")
    serving = threading.Thread(target=role.serve_inference)
    serving.start()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, tok.vocab_size, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    trace = GenerationTrace()
    assert sm.body is server.body  # the server's body (with its LoRA) is the one the local run uses
    try:
        _generate_all(client, link, ids, mask, trace, sm)
    finally:
        link.send_to("server", {}, {"op": "gen_done"}, tag="control")
    serving.join(10)
    assert not serving.is_alive()
    assert role._gen_caches == {}


def _generate_all(client, link, ids, mask, trace, sm):
    with torch.no_grad():
        remote = generate_through(client.head, client.tail, remote_body(link, timeout=30), ids, mask,
                                  max_new_tokens=12, trace=trace)  # fmt: skip
        recomputed = generate_through(client.head, client.tail, remote_body(link, timeout=30), ids, mask,
                                      max_new_tokens=12, use_cache=False)  # fmt: skip
        local = split_generate(
            dataclasses.replace(sm, head=client.head, tail=client.tail), ids, mask, max_new_tokens=12
        )
    assert remote.shape == (2, 19)
    assert torch.equal(remote, local) and torch.equal(recomputed, local)
    assert trace.head_to_body[1] < trace.head_to_body[0] / 5  # after the prompt: one token per row
