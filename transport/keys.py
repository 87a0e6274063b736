"""CurveZMQ keys: keypairs on disk and the server's allow-list of client public keys.

Files are those of ``zmq.auth.create_certificates``: ``NAME.key`` (public) and
``NAME.key_secret`` (public + secret, mode 0600). An allow-list is a directory of public ``.key``
files; the server re-reads it when it changes, so ``fedcore keys revoke`` takes effect at the
revoked client's next message.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


@dataclass(frozen=True)
class Keypair:
    """A CurveZMQ keypair, z85-encoded (40 ASCII bytes each). ``secret`` may be None for a peer's
    public key alone."""

    public: bytes
    secret: bytes | None = None

    @classmethod
    def generate(cls) -> Keypair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    def __repr__(self) -> str:  # never print secrets
        return f"Keypair(public={self.public.decode()!r}, secret={'<hidden>' if self.secret else None})"


def save_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``NAME.key`` and ``NAME.key_secret`` in ``directory``; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_keypair(path: str | Path) -> Keypair:
    """Load a ``.key`` (public only) or ``.key_secret`` (both) certificate file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"key file {str(path)!r} does not exist (make one with 'fedcore keys new')")
    public, secret = zmq.auth.load_certificate(str(path))
    return Keypair(public, secret)


def allow(allow_dir: str | Path, public_key_file: str | Path) -> Path:
    """Add a client's public key file to an allow-list directory (secrets are refused)."""
    src = Path(public_key_file)
    if src.suffix != ".key":
        raise ValueError(f"allow takes a public '.key' file, not {src.name!r} (never share a .key_secret)")
    load_keypair(src)  # validate before copying
    dest_dir = Path(allow_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    return dest


def revoke(allow_dir: str | Path, name: str) -> Path:
    """Remove ``NAME.key`` from an allow-list directory; ValueError if it is not there."""
    path = Path(allow_dir) / (name if name.endswith(".key") else f"{name}.key")
    if not path.is_file():
        raise ValueError(f"{path} is not in the allow-list")
    path.unlink()
    return path


class AllowList:
    """The set of allowed client public keys (z85), from memory and/or an allow directory.

    Thread-safe: the ZAP authenticator thread and the server's I/O thread both read it.
    ``refresh()`` re-reads the directory when its listing changed (cheap: one stat per call).
    """

    def __init__(self, keys: list[bytes] | None = None, directory: str | Path | None = None):
        self._static = set(keys or [])
        self._dir = Path(directory) if directory is not None else None
        self._from_dir: set[bytes] = set()
        self._stamp: tuple | None = None
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        if self._dir is None:
            return
        entries = sorted(self._dir.glob("*.key")) if self._dir.is_dir() else []
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in entries if p.exists())
        if stamp == self._stamp:
            return
        keys = set()
        for p in entries:
            try:
                keys.add(zmq.auth.load_certificate(str(p))[0])
            except (OSError, ValueError):
                continue  # a half-written or foreign file is skipped, not fatal
        with self._lock:
            self._from_dir, self._stamp = keys, stamp

    def add(self, key: bytes) -> None:
        with self._lock:
            self._static.add(key)

    def remove(self, key: bytes) -> None:
        with self._lock:
            self._static.discard(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            key = key.encode()
        with self._lock:
            return key in self._static or key in self._from_dir

    # zmq.auth credentials-provider protocol
    def callback(self, domain: str, key: bytes) -> bool:
        self.refresh()
        return key in self
