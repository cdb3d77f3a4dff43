"""Sequential (numbered and named) and ModuleDict: torch's keys, strict loads, stored configs."""

from __future__ import annotations

import json
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def _named():
    j = nn.Sequential(
        OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("relu", nn.ReLU())])
    )
    t = torch.nn.Sequential(
        OrderedDict(
            [("conv", torch.nn.Conv2d(3, 4, 3)), ("bn", torch.nn.BatchNorm2d(4)), ("relu", torch.nn.ReLU())]
        )
    )
    return j, t


def test_named_sequential_has_torchs_keys_and_loads_strictly_both_ways(to_torch, close, rng):
    model, t = _named()
    params, state = model.init(jax.random.key(0))
    sd = model.state_dict(params, state)
    assert list(sd) == list(t.state_dict()) == [
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "bn.num_batches_tracked",
    ]  # fmt: skip
    to_torch(model, params, state, t)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    for train in (False, True):
        t.train(train)
        y, new_state = model.apply(params, state, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))
    close(new_state["bn"]["running_mean"], t.bn.running_mean)
    t.train(False)
    back, back_state = jaxnets.load_state_dict(model, t.state_dict())
    close(model.apply(back, back_state, jnp.asarray(x))[0], t(torch.from_numpy(x)))


def test_named_sequential_access_by_position_slice_and_name():
    model, _ = _named()
    assert model[0] == nn.Conv2d(3, 4, 3) and model.bn == nn.BatchNorm2d(4) and len(model) == 3
    tail = model[1:]
    assert isinstance(tail, nn.Sequential) and list(tail.children()) == ["bn", "relu"]
    assert list(nn.Sequential(nn.ReLU(), nn.Tanh())[1:].children()) == ["1"]  # torch keeps "1"
    with pytest.raises(AttributeError, match="no attribute or child named 'pool'"):
        _ = model.pool


def test_numbered_mapping_equals_positional_sequential():
    a = nn.Sequential(OrderedDict([("0", nn.ReLU()), ("1", nn.Tanh())]))
    assert a == nn.Sequential(nn.ReLU(), nn.Tanh()) and a.names is None


def test_named_sequential_config_round_trips_through_json():
    model, _ = _named()
    config = jaxnets.to_config(model)
    rebuilt = jaxnets.from_config(json.loads(json.dumps(config)))
    assert rebuilt == model and hash(rebuilt) == hash(model)
    assert list(rebuilt.children()) == ["conv", "bn", "relu"]


def test_sequential_files_written_by_0_1_still_load():
    # 0.1 stored Sequential's config as {"layers": [...]} (a list, or the tagged tuple)
    lin = jaxnets.to_config(nn.Linear(2, 3))
    for layers in ([lin, {"__class__": "nn.ReLU", "config": {}}], {"__tuple__": [lin]}):
        old = {"__class__": "nn.Sequential", "config": {"layers": layers}}
        model = jaxnets.from_config(old)
        assert isinstance(model, nn.Sequential) and model.names is None and model[0] == nn.Linear(2, 3)


def test_sequential_rejects_bad_names_and_members():
    with pytest.raises(ValueError, match="without '.'"):
        nn.Sequential(OrderedDict([("a.b", nn.ReLU())]))
    with pytest.raises(ValueError, match="non-empty strs"):
        nn.Sequential({"": nn.ReLU()})
    with pytest.raises(TypeError, match="'x' is int"):
        nn.Sequential({"x": 3})
    with pytest.raises(jaxnets.RegistryError, match="2 names for 1 layers"):
        cfg = jaxnets.to_config(nn.Sequential({"a": nn.ReLU()}))
        cfg["config"]["names"] = {"__tuple__": ["a", "b"]}
        jaxnets.from_config(cfg)


def _heads():
    j = nn.ModuleDict({"cls": nn.Linear(4, 3), "box": nn.Linear(4, 2, bias=False), "act": nn.ReLU()})
    t = torch.nn.ModuleDict(
        {"cls": torch.nn.Linear(4, 3), "box": torch.nn.Linear(4, 2, bias=False), "act": torch.nn.ReLU()}
    )
    return j, t


def test_module_dict_keys_follow_insertion_order_and_load_strictly(to_torch, close, rng):
    md, t = _heads()
    params, state = md.init(jax.random.key(0))
    assert list(md.state_dict(params, state)) == list(t.state_dict()) == [
        "cls.weight", "cls.bias", "box.weight",
    ]  # fmt: skip
    to_torch(md, params, state, t)
    back, _ = jaxnets.load_state_dict(md, t.state_dict())
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for name in ("cls", "box"):
        y, _ = md[name].apply(back[name], {}, jnp.asarray(x))
        close(y, t[name](torch.from_numpy(x)))


def test_module_dict_is_a_mapping_and_a_stored_config():
    md, _ = _heads()
    assert list(md) == list(md.keys()) == ["cls", "box", "act"] and len(md) == 3 and "box" in md
    assert md["act"] == nn.ReLU() and [type(v).__name__ for v in md.values()] == ["Linear", "Linear", "ReLU"]
    rebuilt = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(md))))
    assert rebuilt == md and list(rebuilt) == ["cls", "box", "act"]
    with pytest.raises(KeyError, match="no module 'seg'"):
        md["seg"]
    with pytest.raises(TypeError, match="ModuleDict is a container, not a layer"):
        md.apply({}, {}, jnp.ones(4))


@jaxnets.register(name="tests.nn.MultiHead")
class MultiHead(nn.Module):
    body: nn.Sequential = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 8)), ("act", nn.GELU())]))
    heads: nn.ModuleDict = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 3)})

    def apply(self, params, state, x, *, train=False, key=None):
        h, _ = self.body.apply(params["body"], state["body"], x)
        return {n: self.heads[n].apply(params["heads"][n], {}, h)[0] for n in self.heads}, state


def test_containers_nest_in_a_composite_with_torch_keys_and_save(tmp_path):
    model = MultiHead()
    params, state = model.init(jax.random.key(0))
    assert list(model.state_dict(params, state)) == [
        "body.fc.weight", "body.fc.bias", "heads.a.weight", "heads.a.bias", "heads.b.weight",
        "heads.b.bias",
    ]  # fmt: skip
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.model == model
    out, _ = loaded.model.apply(loaded.params, loaded.state, jnp.ones((2, 4)))
    want, _ = model.apply(params, state, jnp.ones((2, 4)))
    np.testing.assert_array_equal(out["b"], want["b"])
