"""The shared component configs: their choices match what the lower layers accept, TOML tables
build them with clear errors, and every method composes them."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from fedcore.config import (
    FAMILIES,
    LORA_TARGETS,
    SKILLS,
    DataConfig,
    ModelConfig,
    TransportConfig,
    build_config,
)
from fedcore.data import SKILLS as DATA_SKILLS
from fedcore.lora import TARGET_ALIASES
from fedcore.model.tiny import FAMILIES as MODEL_FAMILIES


def test_choices_match_the_lower_layers():
    assert FAMILIES == MODEL_FAMILIES
    assert SKILLS == DATA_SKILLS
    assert LORA_TARGETS == tuple(TARGET_ALIASES)


@dataclasses.dataclass(kw_only=True)
class _Job:
    RENAMED = {"old_rate": "write rate = ... instead"}

    kind: Literal["a", "b"] = "a"
    rate: float = 1.0
    flag: bool = False
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"kind": "c"}, r"kind must be one of \('a', 'b'\), got 'c'"),
        ({"kind": 1}, r"kind must be one of"),
        ({"rate": "fast"}, "rate must be float, got 'fast'"),
        ({"flag": 1}, "flag must be bool, got 1"),
        ({"model": {"family": "bert"}}, r"model.family must be one of \('llama'"),
        ({"model": {"hidden": 3}}, r"unknown key\(s\) \['hidden'\] in \[model\]; valid keys: \["),
        ({"model": 3}, r"\[model\] must be a table"),
        ({"old_rate": 2.0}, "key 'old_rate' is gone: write rate = ... instead"),
    ],
)
def test_bad_tables_are_refused_with_what_to_write(data, match):
    with pytest.raises(ValueError, match=match):
        build_config(_Job, data, renamed=_Job.RENAMED)


def test_tables_build_nested_configs_and_ints_become_floats():
    job = build_config(_Job, {"kind": "b", "rate": 2, "model": {"hidden_size": 64, "num_heads": 4}})
    assert job.kind == "b" and job.rate == 2.0 and isinstance(job.rate, float)
    assert job.model == ModelConfig(hidden_size=64)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ModelConfig(family="bert"), "model.family must be one of"),  # Literal fields checked in code too
        (lambda: ModelConfig(num_layers=0), "model.num_layers must be >= 1"),
        (lambda: DataConfig(partition="shards"), "data.partition must be one of"),
        (lambda: TransportConfig(kind="grpc"), "transport.kind must be one of"),
        (lambda: TransportConfig(bind="localhost:5555"), "transport.bind must be tcp://HOST:PORT"),
    ],
)
def test_direct_construction_is_validated(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_every_registered_method_composes_the_shared_components():
    from fedcore.algorithms import algorithms, get_algorithm

    assert set(algorithms()) >= {"split", "fedit", "fibecfed", "fedbcd", "parablock", "fedcybgd"}
    for name in algorithms():
        spec = get_algorithm(name)
        config = spec.config_from_dict({})  # the method's defaults
        assert config.algorithm == name and isinstance(config, spec.config_class)
        assert isinstance(config.transport, TransportConfig) and config.num_clients >= 1
        assert isinstance(config.model, ModelConfig), name
        assert spec.config_from_dict(spec.config_to_dict(config)) == config, name
