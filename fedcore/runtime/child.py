"""One client process: ``python -m fedcore.runtime.child`` (spawned by ``run_processes``, arguments
as JSON on stdin) and ``fedcore join`` both end in ``run_client``.

The method comes from the registry by the config's ``algorithm``; there is no branch per method.
A server that goes silent for ``transport.lease_s`` (or refuses the client) ends the process with
one line on stderr and exit code ``EXIT_SERVER_LOST``, never a hang.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fedcore.algorithms import get_algorithm
from fedcore.transport import PeerTimeout, TransportError

from .processes import connect_client, load_plugin

EXIT_SERVER_LOST = 3


def run_client(
    config_dict: dict[str, Any], index: int, address: str, key_file: str | None, server_key_file: str | None
) -> int:
    """Build client ``index`` of the config's algorithm, connect, say hello, obey the server until it
    says stop. Returns the exit code: 0, or ``EXIT_SERVER_LOST`` with one line on stderr."""
    spec = get_algorithm(str(config_dict.get("algorithm", "split")))
    config = spec.config_from_dict(config_dict)
    link = connect_client(config.transport, address, key_file, server_key_file)
    try:
        role = spec.client(config, link, index)  # the hello follows: the server waits while models build
        link.send({}, {"op": "hello", "client": index}, tag="control")
        role.run()
    except (PeerTimeout, TransportError) as exc:
        print(f"fedcore: client {index}: lost the server at {address}: {exc}", file=sys.stderr, flush=True)
        return EXIT_SERVER_LOST
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    _args = json.loads(sys.stdin.read())
    load_plugin(_args.get("plugin"))
    sys.exit(run_client(_args["config"], _args["index"], _args["address"], _args["key_file"], _args["server_key_file"]))
