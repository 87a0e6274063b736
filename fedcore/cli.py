"""Command line: ``fedcore run [CONFIG.toml]`` (the main job)."""

from __future__ import annotations

import argparse
import sys

from fedcore import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcore", description="Federated fine-tuning of LLMs.")
    parser.add_argument("--version", action="version", version=f"fedcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job; with no config, the embedded default split fine-tuning")
    run.add_argument(
        "config",
        nargs="?",
        help="TOML config: split fine-tuning (fedcore/configs/default.toml) or, with a top-level "
        "'method', FedBCD / ParaBlock / FedCyBGD (examples/bcd/)",
    )
    run.add_argument("--out", help="output directory (overrides [output] dir)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from fedcore.runtime.config import load_config, read_toml

        try:
            if args.config is not None and "method" in read_toml(args.config):  # FedBCD / ParaBlock / FedCyBGD
                from fedcore.algorithms.bcd.config import load_bcd_config
                from fedcore.runtime.bcd_job import run_bcd_job

                bcd = load_bcd_config(args.config)
                if args.out:
                    bcd.output.dir = args.out
                run_bcd_job(bcd)
                return 0
            config = load_config(args.config)  # None: the embedded default (configs/default.toml)
        except ValueError as err:
            print(f"fedcore: {err}", file=sys.stderr)
            return 2
        from fedcore.runtime.main_job import run_main_job

        if args.out:
            config.output.dir = args.out
        run_main_job(config)
    elif args.command == "keys":
        return _keys(args)
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


if __name__ == "__main__":
    sys.exit(main())
