"""A fedcore config from Flower's run_config (dotted keys are fedcore's tables), a node's shard,
the app mode per method, and the one-line error without Flower installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedcore.integrations.flower import config_from_run_config, partition_of, run_config_of
from fedcore.integrations.flower.apps import mode_of

from .conftest import tiny


def test_dotted_keys_become_tables_and_json_strings_lists() -> None:
    config = config_from_run_config(
        {
            "algorithm": "fedit",
            "train.rounds": 7,
            "train.clients": 5,
            "lora.targets": '["q", "k", "v"]',
            "flower.mode": "native",
            "model.hidden_size": 48,
        }  # fmt: skip
    )
    assert (config.train.rounds, config.train.clients, config.model.hidden_size) == (7, 5, 48)
    assert config.lora.targets == ["q", "k", "v"]


@pytest.mark.parametrize("algorithm", ["fedit", "fedbcd", "split", "fibecfed"])
def test_run_config_round_trip(algorithm: str) -> None:
    config = tiny(algorithm)
    flat = run_config_of(config)
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())  # what Flower's config holds
    assert config_from_run_config(flat) == config


def test_a_config_file_with_overrides(tmp_path) -> None:
    (tmp_path / "run.toml").write_text('algorithm = "fedbcd"\nclients = 4\nrounds = 9\n')
    config = config_from_run_config({"config": "run.toml", "rounds": 2}, app_dir=tmp_path)
    assert (config.method, config.clients, config.rounds) == ("fedbcd", 4, 2)


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"train.rounds": 2}, "names no fedcore algorithm"),
        ({"algorithm": "fedit", "train.nope": 1}, "nope"),
        ({"algorithm": "fedit", "lora.targets": "[q"}, "not JSON"),
        ({"algorithm": "fedit", "train": 3, "train.rounds": 2}, "is a value, not a table"),
        ({"algorithm": "fedit", "config": "/nonexistent/x.toml"}, "does not exist"),
    ],
)
def test_bad_run_config_is_one_line(run_config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        config_from_run_config(run_config)
    assert "\n" not in str(err.value)


def test_partition_of() -> None:
    assert partition_of({"partition-id": 2}, 3) == 2
    assert partition_of({"partition-id": "1"}, 3) == 1
    for bad in ({}, {"partition-id": 3}, {"partition-id": -1}, {"partition-id": True}, {"partition-id": "x"}):
        with pytest.raises(ValueError, match="partition-id"):
            partition_of(bad, 3)


def test_mode_per_method() -> None:
    assert mode_of(tiny("fedit"), {}) == "native"
    assert mode_of(tiny("fedbcd"), {}) == "native"
    assert mode_of(tiny("split"), {}) == "control"
    assert mode_of(tiny("fedit"), {"flower.mode": "control"}) == "control"
    with pytest.raises(ValueError, match="has no Flower strategy"):
        mode_of(tiny("split"), {"flower.mode": "native"})
    with pytest.raises(ValueError, match="auto, native or control"):
        mode_of(tiny("fedit"), {"flower.mode": "x"})


def test_missing_flower_names_the_extra() -> None:
    code = "import sys; sys.modules['flwr'] = None\nimport fedcore.integrations.flower"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode != 0
    assert "pip install 'fedcore[flower]'" in proc.stderr.strip().splitlines()[-1]


def test_switches_read_quoted_strings() -> None:
    from fedcore.integrations.flower.outputs import flag

    assert [flag(v) for v in (True, False, "true", "false", "False", "1", "0", "")] == [
        True, False, True, False, False, True, False, False,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="true or false"):
        flag("maybe")
