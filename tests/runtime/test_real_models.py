"""``fedcore run`` on real on-disk checkpoints and a JSONL dataset: tiny random Llama and GPT-2
saved with ``save_pretrained`` beside a BPE tokenizer trained by ``tokenizers``. Every run must
lower the held-out loss, save what it trained in the ecosystem's format (peft adapter or model
folder) and score the saved model; bad input stops the run with one line before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from fedcore.runtime.metrics import read_metrics

from .conftest import TINY, run_cli, with_transport, write_config
from .real_assets import save_checkpoint, write_qa_jsonl

DATA = {"train_per_client": 16, "eval_per_client": 4, "max_len": 40, "generate": 2, "max_new_tokens": 6}
TRAIN = {"clients": 2, "rounds": 2, "local_steps": 3, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    return {
        "llama": save_checkpoint(root / "llama", "llama"),
        "gpt2": save_checkpoint(root / "gpt2", "gpt2"),
        "data": write_qa_jsonl(root / "qa.jsonl"),
    }


def tables(algorithm: str, checkpoint: Path, data: Path, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"algorithm": algorithm, "model": {"pretrained": str(checkpoint)}}
    data_table = {**DATA, "path": str(data)}
    if algorithm == "split":
        base.update(split={"blocks_a": 1, "blocks_c": 1, "mode": "client-batch"}, lora={"r": 4, "alpha": 8.0})
        base.update(train=TRAIN, data=data_table)
    elif algorithm == "fedit":
        base.update(lora={"r": 4, "alpha": 8.0, "targets": ["q", "v"]}, train=TRAIN, data=data_table)
    else:  # the flat configs: fibecfed, fedbcd, parablock, fedcybgd
        flat = {k: v for k, v in TINY[algorithm].items() if k not in ("model", "data")}
        base.update(flat, data={**data_table, "dirichlet_alpha": 1.0}, lr=0.01)
    base.update(extra)
    return base


def run_ok(tmp_path: Path, config: dict[str, Any], timeout: float = 300.0) -> Path:
    out = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", {**config, "output": {"dir": str(out)}})
    proc = run_cli(["run", str(path)], cwd=tmp_path, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
    (run_dir,) = out.iterdir()
    return run_dir


def text_evals(run_dir: Path) -> list[dict[str, Any]]:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "text_eval"]
    assert rows, "no evaluation of the saved model"
    return rows


def assert_loss_falls(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        assert r["loss_after"] < r["loss_before"] - 0.05, r
        assert r["prompts"] == DATA["generate"]
        assert 0.0 <= r["rouge_l_after"] <= 1.0 and 0.0 <= r["exact_after"] <= 1.0


def peft_logits_match(checkpoint: Path, adapter: Path) -> None:
    """peft loads the saved adapter; its logits are the model fedcore evaluated; it generates."""
    from peft import PeftModel

    from fedcore.lora import load_adapter

    ids = torch.randint(4, 250, (2, 9), generator=torch.Generator().manual_seed(0))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint), adapter).eval()
    ours = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    load_adapter(ours, adapter)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ours(input_ids=ids).logits)
        plain = AutoModelForCausalLM.from_pretrained(checkpoint).eval()(input_ids=ids).logits
    assert not torch.allclose(plain, ours(input_ids=ids).logits), "the adapter changed nothing"
    out = peft_model.generate(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=3,
                              do_sample=False, pad_token_id=0)  # fmt: skip
    assert out.shape == (1, 12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "algorithm", "transport"),
    [
        ("llama", "split", "zmq"),
        ("llama", "fedit", "inprocess"),
        ("gpt2", "split", "inprocess"),
        ("gpt2", "fedit", "zmq"),
    ],  # fmt: skip
)
def test_run_on_a_saved_checkpoint(tmp_path, assets, family, algorithm, transport):
    config = with_transport(tables(algorithm, assets[family], assets["data"]), kind=transport)
    run_dir = run_ok(tmp_path, config)
    assert_loss_falls(text_evals(run_dir))
    adapter = run_dir / "model" / "global"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(assets[family])
    peft_logits_match(assets[family], adapter)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedbcd", "parablock", "fedcybgd"])
def test_block_methods_save_a_model_folder(tmp_path, assets, algorithm):
    run_dir = run_ok(tmp_path, tables(algorithm, assets["llama"], assets["data"], mode="full"))
    rows = text_evals(run_dir)
    assert_loss_falls(rows)
    folder = run_dir / "model" / "global"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # an ordinary folder, tokenizer included
    base = AutoModelForCausalLM.from_pretrained(assets["llama"]).eval()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert changed and all(".layers." in n for n in changed), changed  # only decoder blocks trained
    assert (folder / "tokenizer.json").is_file()


@pytest.mark.slow
def test_fibecfed_saves_one_adapter_per_client(tmp_path, assets):
    run_dir = run_ok(tmp_path, tables("fibecfed", assets["llama"], assets["data"]))
    rows = text_evals(run_dir)
    assert sorted(r["client"] for r in rows) == [0, 1]
    for r in rows:
        assert r["loss_after"] < r["loss_before"], r
        assert (run_dir / "model" / f"client-{r['client']}" / "adapter_model.safetensors").is_file()


# ---- bad input: one line on stderr, exit code 2, no run directory, nothing trained


def refused(tmp_path: Path, config: dict[str, Any]) -> str:
    out = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", {**config, "output": {"dir": str(out)}})
    proc = run_cli(["run", str(path)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedcore run: "), proc.stderr
    assert not out.exists() or not any(out.iterdir()), "a run directory was created"
    return lines[0]


def test_a_truncated_jsonl_line_is_named_by_file_and_line(tmp_path, assets):
    data = tmp_path / "cut.jsonl"
    text = assets["data"].read_text().splitlines()
    data.write_text("\n".join(text[:5] + [text[5][:30]] + text[6:]) + "\n")
    line = refused(tmp_path, tables("fedit", assets["llama"], data))
    assert f"{data}:6:" in line


def test_skip_bad_counts_the_skipped_lines(tmp_path, assets):
    data = tmp_path / "cut.jsonl"
    text = assets["data"].read_text().splitlines()
    data.write_text("\n".join(text[:5] + ["{not json", text[6][:20]] + text[7:]) + "\n")
    config = tables("fedit", assets["llama"], data)
    config["data"] = {**config["data"], "skip_bad": True}
    config["train"] = {**TRAIN, "rounds": 1, "local_steps": 1}
    proc_dir = tmp_path / "ok"
    proc_dir.mkdir()
    output = {"dir": str(proc_dir / "runs"), "save_model": False}
    path = write_config(proc_dir / "run.toml", {**config, "transport": {"kind": "inprocess"}, "output": output})
    proc = run_cli(["run", str(path)], cwd=proc_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 malformed lines skipped" in " ".join(proc.stdout.split())


def test_an_empty_dataset_is_refused(tmp_path, assets):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    assert "no usable examples" in refused(tmp_path, tables("split", assets["llama"], data))


def test_a_partition_key_no_row_has_is_refused(tmp_path, assets):
    config = tables("fedit", assets["llama"], assets["data"])
    config["data"] = {**config["data"], "partition_key": "topic"}
    assert "topic" in refused(tmp_path, config)


def test_a_checkpoint_folder_without_weights_is_refused(tmp_path, assets):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text((assets["llama"] / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text((assets["llama"] / name).read_text())
    assert "no model weights" in refused(tmp_path, tables("split", folder, assets["data"]))


def test_a_missing_checkpoint_is_refused(tmp_path, assets):
    assert "does not exist" in refused(tmp_path, tables("fedbcd", tmp_path / "nowhere", assets["data"]))


def test_a_split_deeper_than_the_checkpoint_is_refused(tmp_path, assets):
    config = tables("split", assets["llama"], assets["data"])
    config["split"] = {**config["split"], "blocks_a": 2, "blocks_c": 2}  # 4 layers: none left for the body
    assert "blocks" in refused(tmp_path, config)


def test_blocks_larger_than_the_checkpoint_are_refused(tmp_path, assets):
    assert "layers_per_block" in refused(
        tmp_path, tables("fedbcd", assets["llama"], assets["data"], layers_per_block=5)
    )
