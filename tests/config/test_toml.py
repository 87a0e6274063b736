"""``dump_toml`` writes what ``parse_toml`` reads back, strings with quotes, backslashes, newlines
and non-ASCII included; what a config file cannot hold is refused by key."""

from __future__ import annotations

import pytest

from fedcore.config.toml import dump_toml, parse_toml


def test_a_config_round_trips():
    tables = {
        "algorithm": "split",
        "seed": 3,
        "model": {"pretrained": 'C:\\models\\"x"\nü', "dtype": "bf16", "local_files_only": False},
        "lora": {"r": 8, "alpha": 16.0, "targets": ["q", "v"]},
    }
    assert parse_toml(dump_toml(tables), "test") == tables


def test_a_table_nested_deeper_is_refused():
    with pytest.raises(ValueError, match="model.extra"):
        dump_toml({"model": {"extra": {"deeper": 1}}})
