"""The one registry: names in files <-> classes, configs <-> objects."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import jaxnets
from jaxnets import nn
from jaxnets.core import registry


@jaxnets.register(name="tests.Preprocessor")
@dataclasses.dataclass(frozen=True)
class Preprocessor:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: list = dataclasses.field(default_factory=list)


def test_config_round_trips_through_json():
    obj = Preprocessor((0.5, 0.25), (2.0, 1.0), ["a", "b"])
    cfg = json.loads(json.dumps(jaxnets.to_config(obj)))
    assert jaxnets.from_config(cfg) == obj


def test_nested_layers_round_trip():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Flatten(0, -1))
    assert jaxnets.from_config(jaxnets.to_config(model)) == model


def test_numpy_arrays_in_configs_round_trip():
    cfg = jaxnets.to_config({"mean": np.arange(4, dtype=np.float32).reshape(2, 2)})
    back = jaxnets.from_config(json.loads(json.dumps(cfg)))["mean"]
    assert back.dtype == np.float32 and back.shape == (2, 2)


def test_unregistered_name_error_names_class_and_fix():
    with pytest.raises(jaxnets.RegistryError, match=r"'MyNet' is not registered.*@jaxnets.register"):
        jaxnets.from_config({"__class__": "MyNet", "config": {}})


def test_unregistered_object_cannot_be_stored():
    @dataclasses.dataclass(frozen=True)
    class Unreg:
        a: int = 1

    with pytest.raises(jaxnets.RegistryError, match="not registered"):
        jaxnets.to_config(Unreg())


def test_name_conflict_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Other:
        pass

    with pytest.raises(jaxnets.RegistryError, match="already registered"):
        jaxnets.register(Other, name="tests.Preprocessor")


def test_redefining_the_same_class_replaces_it():
    def define():
        @dataclasses.dataclass(frozen=True)
        class Redefined:
            a: int = 1

        return Redefined

    first, second = define(), define()
    jaxnets.register(first, name="tests.Redefined")
    jaxnets.register(second, name="tests.Redefined")
    assert registry.lookup("tests.Redefined").cls is second


def test_unknown_field_in_a_stored_config_is_a_clear_error():
    with pytest.raises(jaxnets.RegistryError, match=r"unknown field\(s\) \['width'\]"):
        jaxnets.from_config({"__class__": "nn.Linear", "config": {"in_features": 1, "out_features": 1, "width": 3}})


def test_callables_are_not_configs():
    with pytest.raises(jaxnets.RegistryError, match="plain data"):
        jaxnets.to_config({"fn": print})


def test_deeply_nested_config_is_refused():
    cfg: object = 1
    for _ in range(100):
        cfg = [cfg]
    with pytest.raises(jaxnets.FileFormatError, match="deeper than"):
        jaxnets.from_config(cfg)


def test_only_config_describable_classes_register():
    class Opaque:
        pass

    with pytest.raises(jaxnets.RegistryError, match="must be a dataclass, a NamedTuple"):
        jaxnets.register(Opaque)


@pytest.mark.parametrize("cfg", [{"__tuple__": 5}, {"__class__": "nn.Linear", "config": {"in_features": 1, "out_features": 1, "bias": True}, "x": 1} | {"config": [1]}])
def test_malformed_config_is_a_file_format_error_never_a_raw_exception(cfg):
    with pytest.raises(jaxnets.FileFormatError, match="model.jnet: "):
        jaxnets.from_config(cfg, file="model.jnet")
