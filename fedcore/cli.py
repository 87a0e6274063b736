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
    run.add_argument("config", nargs="?", help="TOML config (see fedcore/configs/default.toml)")
    run.add_argument("--out", help="output directory (overrides [output] dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from fedcore.runtime.config import load_config
        from fedcore.runtime.main_job import run_main_job

        try:
            config = load_config(args.config)  # None: the embedded default (configs/default.toml)
        except ValueError as err:
            print(f"fedcore: {err}", file=sys.stderr)
            return 2
        if args.out:
            config.output.dir = args.out
        run_main_job(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
