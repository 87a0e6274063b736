"""fedcore.transport: ZeroMQ tensor transport (framing, CurveZMQ security, overlap)."""

if __name__ != "fedcore.transport":
    # Reached only when the checkout itself is on sys.path (``python -m``/``-c`` run from the repo
    # root puts the cwd first), e.g. when transformers probes for Hugging Face's own "kernels".
    raise ImportError(
        "'transport' is not a top-level module: use fedcore.transport. The fedcore checkout is on sys.path; "
        "run from another directory, use the installed commands, or set PYTHONSAFEPATH=1."
    )
