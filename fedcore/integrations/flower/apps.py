"""The Flower apps of a config's method: the native strategy where fedcore has one, else the
control-plane mode. ``examples/flower`` names these two as its components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedcore.algorithms import algorithm_of

from .config import config_from_run_config
from .control import KEYS, RUN
from .local import config_key
from .outputs import Outcome

FIBECFED_QUERIES = ("fedcore_fibecfed_init", "fedcore_fibecfed_gal", "fedcore_fibecfed_save")
NATIVE = ("fedit", "fedbcd", "fibecfed")  # methods with a Flower strategy; the rest run in the control-plane mode


def mode_of(config: Any, run_config: dict[str, Any]) -> str:
    """``native`` or ``control``: run_config ``flower.mode`` (``auto`` by default: native for the
    methods in ``NATIVE``). ``ValueError`` for native on a method without a strategy."""
    name, mode = algorithm_of(config).name, str(run_config.get("flower.mode", "auto"))
    if mode not in ("auto", "native", "control"):
        raise ValueError(f"flower.mode must be auto, native or control, got {mode!r}")
    if mode == "native" and name not in NATIVE:
        raise ValueError(f"{name} has no Flower strategy (native: {', '.join(NATIVE)}); use flower.mode = 'control'")
    if mode == "auto":
        return "native" if name in NATIVE else "control"
    return mode


def server_app(
    config: Any | None = None, *, app_dir: str | Path | None = None, on_outcome: Outcome | None = None
) -> ServerApp:
    """The ServerApp of ``config``'s method (default: the run's ``run_config``; a relative
    ``config`` file there is read from ``app_dir``)."""
    from .control import control_server_app
    from .fedbcd import fedbcd_server_app
    from .fedit import fedit_server_app
    from .fibecfed import fibecfed_server_app

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config if config is not None else config_from_run_config(context.run_config, app_dir=app_dir)
        name = algorithm_of(cfg).name
        if mode_of(cfg, dict(context.run_config)) == "control":
            inner = control_server_app(cfg, on_outcome=on_outcome)
        elif name == "fedit":
            inner = fedit_server_app(cfg, on_outcome=on_outcome)
        elif name == "fibecfed":
            inner = fibecfed_server_app(cfg, on_outcome=on_outcome)
        else:
            inner = fedbcd_server_app(cfg, on_outcome=on_outcome)
        inner(grid, context)

    return app


def client_app(config: Any | None = None, *, app_dir: str | Path | None = None) -> ClientApp:
    """The ClientApp answering every message of ``server_app`` (native and control-plane)."""
    from .control import control_client_app
    from .fedbcd import fedbcd_client_app
    from .fedit import fedit_client_app
    from .fibecfed import fibecfed_client_app

    built: dict[tuple[str, str], ClientApp] = {}
    app = ClientApp()

    def forward(msg: Message, context: Context) -> Message:
        cfg = config if config is not None else config_from_run_config(context.run_config, app_dir=app_dir)
        control = msg.metadata.message_type in (KEYS, RUN) or mode_of(cfg, dict(context.run_config)) == "control"
        key = (config_key(cfg), "control" if control else algorithm_of(cfg).name)
        if key not in built:
            if control:
                built[key] = control_client_app(cfg)
            elif key[1] == "fedit":
                built[key] = fedit_client_app(cfg)
            elif key[1] == "fibecfed":
                built[key] = fibecfed_client_app(cfg)
            else:
                built[key] = fedbcd_client_app(cfg)
        return built[key](msg, context)

    for action in ("fedcore_hello", "fedcore_keys", "fedcore_run", *FIBECFED_QUERIES):
        app.query(action)(forward)
    app.train()(forward)
    app.evaluate()(forward)
    return app
