"""Split TOML configs map onto the dataclasses; unknown keys and bad values are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcore.algorithms.split.config import SplitRunConfig as RunConfig
from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.config import load_split_config as load_config
from fedcore.config import config_to_dict


def test_embedded_default_equals_dataclass_defaults():
    assert load_config(None) == RunConfig()


def test_toml_file_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nclients = 3\nlr = 1\n[lora]\ntargets = ["q", "v"]\n[model]\nfamily = "gpt2"\n')
    config = load_config(path)
    assert config.train.clients == 3 and config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.lora.targets == ["q", "v"] and config.model.family == "gpt2"
    assert config.train.rounds == RunConfig().train.rounds


def test_round_trip_through_dict():
    config = RunConfig()
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    "data,match",
    [
        ({"trian": {}}, r"unknown key\(s\) \['trian'\] in \[config\]"),
        ({"train": {"client": 3}}, r"unknown key\(s\) \['client'\] in \[train\]; valid keys"),
        ({"train": {"clients": "4"}}, "train.clients must be int"),
        ({"train": {"clients": 0}}, "train.clients must be >= 1"),
        ({"train": 5}, r"\[train\] must be a table"),
        ({"model": {"family": "bert"}}, "model.family must be one of"),
        ({"split": {"mode": "pipelined"}}, "split.mode must be one of"),
        ({"split": {"avg_period": -1}}, "split.avg_period must be >= 0"),
        ({"codecs": {"h_B": "int8+noise"}}, "only h_A carries noise"),
        ({"codecs": {"h_A": "zstd"}}, "codecs.h_A must be one of"),
        ({"noise": {"std": 0.0}}, "needs noise.std > 0"),
        ({"split": {"blocks_a": 2, "blocks_c": 2}}, r"blocks_a \+ split.blocks_c must be <= "),
        ({"lora": {"targets": ["q", "qkv"]}}, "lora.targets must be"),
        ({"noise": {"std": -1.0}}, "noise.std must be >= 0"),
        ({"data": {"partition": "shards"}}, "data.partition must be"),
        ({"data": {"skills": "add"}}, "data.skills must be a list"),
        ({"train": {"device": "tpu"}}, "train.device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"train": {"device": "cuda:x"}}, "train.device must be"),
        ({"model": {"vocab_size": -5}}, "model.vocab_size must be >= 0"),
    ],
)
def test_bad_configs_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(data)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.toml")))
def test_every_example_config_loads(path):
    config = load_config(path)
    assert config.split.mode in ("sequential", "client-batch", "server-hierarchical")
