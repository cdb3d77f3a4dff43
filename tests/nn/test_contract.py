"""The Module contract: subclasses are frozen dataclasses, the 0.1 style still works, one walker."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import nn
from jaxnets.core.model import Model, is_model


@jaxnets.register(name="tests.contract.Scale")
class Scale(nn.Module):
    """The lighter contract: fields and apply, nothing else."""

    factor: float = 2.0

    def apply(
        self,
        params: nn.Params,
        state: nn.State,
        x: jax.Array,
        *,
        train: bool = False,
        key: nn.Key = None,
    ) -> nn.Output:
        return x * self.factor, state


@jaxnets.register(name="tests.contract.Affine")
class Affine(nn.Module):
    features: int
    tags: tuple[str, ...] = field(default_factory=tuple, compare=False)

    def init(self, key: jax.Array) -> tuple[nn.Params, nn.State]:
        return {"weight": jnp.ones((self.features,))}, {"count": jnp.zeros((), jnp.int32)}

    def apply(
        self,
        params: nn.Params,
        state: nn.State,
        x: jax.Array,
        *,
        train: bool = False,
        key: nn.Key = None,
    ) -> nn.Output:
        return x * params["weight"], {"count": state["count"] + 1}


@jaxnets.register(name="tests.contract.OldStyle")
@dataclass(frozen=True)
class OldStyle(nn.Module):
    """The 0.1 style: an explicit frozen dataclass decorator under register."""

    inner: nn.Linear = nn.Linear(3, 3)
    tags: tuple[str, ...] = field(default_factory=tuple)
    note: str = field(default="x", compare=False)

    def apply(self, params, state, x, *, train=False, key=None):
        m = self.bind(params, state, train=train, key=key)
        return m.inner(x), m.state


@jaxnets.register(name="tests.contract.Tower")
class Tower(nn.Module):
    stem: Affine = Affine(3)
    blocks: tuple[nn.Module, ...] = (nn.Linear(3, 3), Scale(), nn.Linear(3, 3))
    head: nn.Linear = nn.Linear(3, 1)

    def apply(
        self,
        params: nn.Params,
        state: nn.State,
        x: jax.Array,
        *,
        train: bool = False,
        key: nn.Key = None,
    ) -> nn.Output:
        m = self.bind(params, state, train=train, key=key)
        x = m.stem(x)
        for b in m.blocks:
            x = b(x)
        return m.head(x), m.state


def test_a_subclass_is_a_frozen_hashable_dataclass_without_a_decorator():
    s = Scale(3.0)
    assert dataclasses.is_dataclass(s) and [f.name for f in dataclasses.fields(s)] == ["factor"]
    assert s == Scale(3.0) and hash(s) == hash(Scale(3.0)) and s != Scale()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.factor = 1.0  # type: ignore[misc]
    assert repr(s) == "Scale(factor=3.0)"


def test_field_options_are_kept_in_both_styles():
    assert Affine(2, ("a",)) == Affine(2, ("b",))  # compare=False
    assert OldStyle().tags == () and OldStyle(note="y") == OldStyle()
    assert OldStyle() != OldStyle(inner=nn.Linear(3, 3, bias=False))


def test_the_default_init_of_a_leaf_without_arrays_is_empty():
    assert Scale().init(jax.random.key(0)) == ({}, {})


def test_old_style_layers_still_work_end_to_end(tmp_path):
    m = nn.Sequential(OldStyle(), Scale())
    params, state = m.init(jax.random.key(0))
    assert list(jaxnets.state_dict(params, state, model=m)) == ["0.inner.weight", "0.inner.bias"]
    jaxnets.save(tmp_path / "m.jnet", m, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.model == m
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(
        m.apply(params, state, x)[0], loaded.model.apply(loaded.params, loaded.state, x)[0]
    )


def test_a_subclass_of_a_builtin_layer_in_either_style():
    @dataclass(frozen=True)
    class Wide(nn.Linear):
        gain: float = 1.0

    class Wider(nn.Linear):
        gain: float = 2.0

    assert Wide(2, 3).in_features == 2 and Wide(2, 3, gain=0.5).gain == 0.5
    assert Wider(2, 3, False).bias is False and Wider(2, 3).gain == 2.0
    assert Wider(2, 3).init(jax.random.key(0))[0]["weight"].shape == (3, 2)


def test_a_class_registered_before_any_instance_rebuilds_from_its_config():
    @jaxnets.register(name="tests.contract.Fresh")
    class Fresh(nn.Module):
        width: int = 4

    # No instance has been made yet: the config alone must rebuild it.
    cfg = {"__class__": "tests.contract.Fresh", "config": {"width": 7}}
    assert jaxnets.from_config(cfg) == Fresh(7)
    with pytest.raises(
        jaxnets.RegistryError, match=r"unknown field\(s\) \['depth'\]; the class has \['width'\]"
    ):
        jaxnets.from_config({"__class__": "tests.contract.Fresh", "config": {"depth": 1}})


def test_a_bad_hyperparameter_in_a_file_config_is_a_registry_error():
    cfg = jaxnets.to_config(nn.Conv2d(4, 6, 3))
    cfg["config"]["groups"] = 4  # 6 output channels are not divisible by 4 groups
    with pytest.raises(
        jaxnets.RegistryError, match="cannot rebuild nn.Conv2d.*divisible by groups"
    ):
        jaxnets.from_config(cfg)


def test_bad_hyperparameters_are_value_errors_saying_what_is_accepted():
    with pytest.raises(
        ValueError,
        match=r"Conv2d: in_channels \(4\) and out_channels \(6\) must both be divisible by groups \(4\)",
    ):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 2 ints"):
        nn.Conv2d(4, 6, (3, 3, 3))


def test_named_children_and_named_modules_use_pytorch_paths():
    t = Tower()
    assert [n for n, _ in t.named_children()] == [
        "stem",
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "head",
    ]
    assert [n for n, _ in t.named_modules()] == [
        "",
        "stem",
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "head",
    ]
    seq = nn.Sequential(nn.Linear(3, 3), Tower())
    paths = [n for n, _ in seq.named_modules()]
    assert paths == ["", "0", "1", "1.stem", "1.blocks.0", "1.blocks.1", "1.blocks.2", "1.head"]
    params, state = seq.init(jax.random.key(0))
    keys = jaxnets.state_dict(params, state, model=seq)
    # Every module path with params is a prefix of its keys.
    assert {k.rsplit(".", 1)[0] for k in keys} <= set(paths)


def test_a_list_of_modules_is_an_error_that_says_to_use_a_tuple():
    with pytest.raises(TypeError, match=r"Tower.blocks holds a list of modules.*Use a tuple"):
        Tower(blocks=[nn.Linear(3, 3)]).init(jax.random.key(0))  # type: ignore[arg-type]


def test_modules_satisfy_the_core_protocol_and_classes_do_not():
    assert isinstance(Tower(), Model) and is_model(Tower()) and is_model(nn.Linear(1, 1))
    assert not is_model(Tower) and not is_model({"weight": 1}) and not is_model(3)


def test_the_file_versions_cover_every_registered_module_path(tmp_path):
    seq = nn.Sequential(Tower(), nn.ReLU())
    jaxnets.save(tmp_path / "t.jnet", seq, *seq.init(jax.random.key(0)))
    versions = jaxnets.open(tmp_path / "t.jnet").header["versions"]
    assert versions == {
        "": ["nn.Sequential", 1], "0": ["tests.contract.Tower", 1], "0.stem": ["tests.contract.Affine", 1],
        "0.blocks.0": ["nn.Linear", 1], "0.blocks.1": ["tests.contract.Scale", 1],
        "0.blocks.2": ["nn.Linear", 1], "0.head": ["nn.Linear", 1], "1": ["nn.ReLU", 1],
    }  # fmt: skip


def test_the_version_comes_from_the_package_metadata():
    import importlib.metadata

    assert jaxnets.__version__ == importlib.metadata.version("jaxnets")


def test_a_composite_lists_its_own_params_then_its_buffers_then_its_children_as_torch():
    import torch

    @jaxnets.register(name="tests.contract.WithArrays")
    class WithArrays(nn.Module):
        head: nn.Linear = nn.Linear(2, 2)
        scale: nn.Parameter = nn.Parameter((2,), init="ones")
        ids: nn.Buffer = nn.Buffer((3,), init="arange", dtype="int32")
        norm: nn.BatchNorm1d = nn.BatchNorm1d(2)

    class TorchTwin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(2, 2)
            self.scale = torch.nn.Parameter(torch.ones(2))
            self.register_buffer("ids", torch.arange(3))
            self.norm = torch.nn.BatchNorm1d(2)

    m = WithArrays()
    params, state = m.init(jax.random.key(0))
    assert list(jaxnets.state_dict(params, state, model=m)) == list(TorchTwin().state_dict())
    assert list(jaxnets.state_dict(params, state)) == list(TorchTwin().state_dict())


def test_a_moduledict_child_is_called_through_bind_by_name():
    @jaxnets.register(name="tests.contract.Heads")
    class Heads(nn.Module):
        trunk: nn.Linear = nn.Linear(3, 4)
        heads: nn.ModuleDict = nn.ModuleDict({"cls": nn.Linear(4, 2), "norm": nn.BatchNorm1d(4)})

        def apply(
            self,
            params: nn.Params,
            state: nn.State,
            x: jax.Array,
            *,
            train: bool = False,
            key: nn.Key = None,
        ) -> nn.Output:
            m = self.bind(params, state, train=train, key=key)
            h = m.heads["norm"](m.trunk(x))
            return m.heads["cls"](h), m.state

    model = Heads()
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y, new_state = model.apply(params, state, x, train=True)
    h, _ = model.trunk.apply(params["trunk"], {}, x)
    hn, bn_state = model.heads["norm"].apply(
        params["heads"]["norm"], state["heads"]["norm"], h, train=True
    )
    expected, _ = model.heads["cls"].apply(params["heads"]["cls"], {}, hn)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        new_state["heads"]["norm"]["running_mean"], bn_state["running_mean"]
    )
    assert (
        int(state["heads"]["norm"]["num_batches_tracked"]) == 0
    )  # the caller's state is untouched
    with pytest.raises(KeyError, match=r"ModuleDict at 'heads' has no child module 'box'"):
        model.bind(params, state).heads["box"]
