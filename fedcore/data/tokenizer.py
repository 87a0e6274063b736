"""A character-level tokenizer with a fixed vocabulary: nothing to download, nothing to train.

Ids 0..3 are the special tokens ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; ids 4..98 are the
printable ASCII characters 32..126 (space to ``~``) in code-point order; id 99 is ``"\\n"``. So
``vocab_size == 100`` and every printable ASCII string round-trips through encode/decode.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
CHARS: tuple[str, ...] = tuple(chr(c) for c in range(32, 127)) + ("\n",)


class CharTokenizer:
    """Maps each character to one id; characters outside the vocabulary become ``<unk>``.

    The vocabulary is fixed (see the module docstring), so two instances always agree and a model
    trained with one can be served with another.
    """

    def __init__(self) -> None:
        self._itos: tuple[str, ...] = SPECIAL_TOKENS + CHARS
        self._stoi: dict[str, int] = {ch: i for i, ch in enumerate(CHARS, len(SPECIAL_TOKENS))}
        assert len(self._stoi) == len(CHARS), "duplicate character in the vocabulary"
        self.pad_id: int = 0
        self.bos_id: int = 1
        self.eos_id: int = 2
        self.unk_id: int = 3

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (100)."""
        return len(self._itos)

    @property
    def special_ids(self) -> frozenset[int]:
        """The ids of ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>``."""
        return frozenset(range(len(SPECIAL_TOKENS)))

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """``text`` as a list of ids, one per character (unknown characters -> ``unk_id``).

        ``add_bos`` / ``add_eos`` put ``bos_id`` first / ``eos_id`` last. Raises ``TypeError`` if
        ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; decode bytes first")
        ids = [self._stoi.get(ch, self.unk_id) for ch in text]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """The text for ``ids`` (any iterable of ints, e.g. a list or a 1-D integer tensor).

        With ``skip_special`` the four special tokens are dropped (``<unk>`` too: the character it
        replaced is lost); without it they appear as their names, e.g. ``"<eos>"``. Raises
        ``ValueError`` for an id outside ``[0, vocab_size)``.
        """
        out: list[str] = []
        n_special = len(SPECIAL_TOKENS)
        for raw in ids:
            i = int(raw)
            if not 0 <= i < len(self._itos):
                raise ValueError(f"token id {i} is outside [0, {len(self._itos)}): wrong tokenizer?")
            if i < n_special and skip_special:
                continue
            out.append(self._itos[i])
        return "".join(out)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
