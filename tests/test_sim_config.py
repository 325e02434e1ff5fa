"""datamodules.simulation.SimConfig, the base of every simulator's config: mapping, coercion, hash.

Each family's own config (LensSimConfig, WLSimConfig, AudioSimConfig) is checked in its family's tests,
including its hash at the defaults, which names existing caches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf

from datamodules.simulation import SimConfig


@dataclasses.dataclass(frozen=True)
class ToyConfig(SimConfig):
    n: int = 3
    scale: float = 1.0
    name: str = "toy"
    flag: bool = True
    span: tuple[float, float] = (0.0, 1.0)
    levels: tuple[int, ...] = (1, 2)
    table: tuple[tuple[float, ...], ...] = ((1.0,), (2.0, 3.0))

    hash_version = ("toy_version", 1)

    def _validate(self) -> None:
        if self.n < 1:
            raise self._bad("n", "must be >= 1")


@dataclasses.dataclass
class MutableToy(SimConfig):
    n: int = 3

    def _validate(self) -> None:
        if self.n < 1:
            raise self._bad("n", "must be >= 1")


def test_values_are_coerced_to_the_declared_types() -> None:
    cfg = ToyConfig(n=np.int64(4), scale=2, span=[0, 5], levels=[3.0], table=[[1], [2, 3]])
    assert cfg.n == 4 and type(cfg.n) is int
    assert cfg.scale == 2.0 and type(cfg.scale) is float
    assert cfg.span == (0.0, 5.0) and all(type(v) is float for v in cfg.span)
    assert cfg.levels == (3,) and type(cfg.levels[0]) is int
    assert cfg.table == ((1.0,), (2.0, 3.0))


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("n", 2.5, "an integer"),
        ("n", True, "an integer"),
        ("scale", "big", "a number"),
        ("name", 5, "a string"),
        ("name", False, "quote"),
        ("flag", 1, "true/false"),
        ("span", [1.0], "list of 2"),
        ("span", "0,1", "a list"),
        ("levels", [1, 2.5], "an integer"),
        ("n", 0, "must be >= 1"),
    ],
)
def test_a_bad_value_fails_naming_the_field(field: str, value, why: str) -> None:
    with pytest.raises(ValueError, match=f"data.simulation.{field} = .*{why}"):
        ToyConfig(**{field: value})


def test_from_mapping_refuses_unknown_keys_naming_them_and_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['nn'\].*known: \[.*'n'.*'scale'"):
        ToyConfig.from_mapping({"nn": 3})
    with pytest.raises(ValueError, match="ToyConfig or a mapping"):
        ToyConfig.from_mapping([("n", 3)])


def test_from_mapping_takes_hydra_nodes_none_and_instances() -> None:
    node = OmegaConf.create({"n": 5, "span": [0, 2], "table": [[1.0], [2.0]]})
    cfg = ToyConfig.from_mapping(node)
    assert cfg == ToyConfig(n=5, span=(0.0, 2.0), table=((1.0,), (2.0,)))
    assert ToyConfig.from_mapping(None) == ToyConfig()
    assert ToyConfig.from_mapping(cfg) == cfg
    assert MutableToy.from_mapping(MutableToy(n=2)).n == 2
    changed = MutableToy()
    changed.n = 0  # a mutable config changed after construction is checked again
    with pytest.raises(ValueError, match="data.simulation.n = 0: must be >= 1"):
        MutableToy.from_mapping(changed)


def test_equal_configs_hash_equally_however_spelled() -> None:
    a = ToyConfig.from_mapping({"scale": 1, "span": [0, 1]})
    assert a.content_hash() == ToyConfig().content_hash()
    assert ToyConfig(n=4).content_hash() != ToyConfig().content_hash()
    assert len(a.content_hash()) == 12
