"""Split inference through the client/server roles: tokens/s with KV caches on both sides (only the
new token's hidden state crosses per step) vs recomputing the whole sequence every step, 128 new
tokens, greedy. CPU: the tiny default model over InProcessHub (the roles' messages and copies,
no sockets); a GPU run with a Llama-3.2-1B-shaped model is pending.

    python bench/bench_split_inference.py [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, write_results  # noqa: E402
from fedcore.transport import InProcessHub  # noqa: E402

from fedcore.algorithms.split.client_role import remote_body  # noqa: E402
from fedcore.algorithms.split.config import load_split_config as load_config  # noqa: E402
from fedcore.algorithms.split.server_role import SplitServerRole  # noqa: E402
from fedcore.algorithms.split.setup import build_split, client_parts, server_parts  # noqa: E402
from fedcore.data import CharTokenizer  # noqa: E402
from fedcore.model import generate_through  # noqa: E402

NEW_TOKENS = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = load_config()
    tok = CharTokenizer()
    sm = build_split(config, tok)
    server, client = server_parts(config, sm), client_parts(config, sm, 0)
    hub = InProcessHub()
    role = SplitServerRole(hub.server(), server, ["c0"], [1.0], timeout=600)
    link = hub.endpoint("c0")
    serving = threading.Thread(target=role.serve_inference, daemon=True)
    serving.start()
    ids = torch.randint(4, tok.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    rows, seconds = [], {}
    try:
        for use_cache in (True, False):
            with torch.no_grad():
                t0 = time.perf_counter()
                out = generate_through(client.head, client.tail, remote_body(link, timeout=600), ids,
                                       max_new_tokens=NEW_TOKENS, use_cache=use_cache)  # fmt: skip
                seconds[use_cache] = time.perf_counter() - t0
            generated = (out.shape[1] - ids.shape[1]) * ids.shape[0]
            impl = "kv cache both sides" if use_cache else "recompute, no cache"
            ms = round(1e3 * seconds[use_cache], 1)
            rate = round(generated / seconds[use_cache], 1)
            rows.append({"case": f"B4 prompt 32 +{NEW_TOKENS} tokens", "impl": impl, "ms": ms, "tokens_per_s": rate})
            print(f"{impl:<22} {generated / seconds[use_cache]:8.1f} tokens/s")
    finally:
        link.send_to("server", {}, {"op": "gen_done"}, tag="control")
        serving.join(30)
    goals = [goal("KV-cached split inference speed-up over recomputation", seconds[False] / seconds[True], ">= 1.0")]
    print(f"wrote {write_results('split_inference', rows, goals, out=args.out)}")


if __name__ == "__main__":
    main()
