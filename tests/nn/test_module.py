"""The layer protocol: composite models, bind, key threading, and the keys they produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import nn
from jaxnets.nn.module import need_key


@jaxnets.register(name="tests.Noisy")
@dataclass(frozen=True)
class Noisy(nn.Module):
    """Adds N(0,1) noise in training; keeps a call counter in its state."""

    def init(self, key):
        return {}, {"calls": jnp.zeros((), jnp.int32)}

    def apply(self, params, state, x, *, train=False, key=None):
        if train:
            x = x + jax.random.normal(need_key(self, key), x.shape)
        return x, {"calls": state["calls"] + 1}


@jaxnets.register(name="tests.Net")
@dataclass(frozen=True)
class Net(nn.Module):
    fc1: nn.Linear = nn.Linear(3, 5)
    noise: Noisy = Noisy()
    blocks: tuple[nn.Module, ...] = (nn.Linear(5, 5), nn.Linear(5, 5, bias=False))
    fc2: nn.Linear = nn.Linear(5, 2)

    def apply(self, params, state, x, *, train=False, key=None):
        m = self.bind(params, state, train=train, key=key)
        x = m.noise(jax.nn.relu(m.fc1(x)))
        for block in m.blocks:
            x = block(x)
        return m.fc2(x), m.state


def test_composite_keys_follow_field_order_like_torch_attributes():
    net = Net()
    params, state = net.init(jax.random.key(0))
    assert list(net.state_dict(params, state)) == [
        "fc1.weight", "fc1.bias", "noise.calls", "blocks.0.weight", "blocks.0.bias",
        "blocks.1.weight", "fc2.weight", "fc2.bias",
    ]


def test_bind_threads_state_through_children_under_jit():
    net = Net()
    params, state = net.init(jax.random.key(0))
    y, state = jax.jit(net.apply)(params, state, jnp.ones((4, 3)))
    y, state = jax.jit(net.apply)(params, state, jnp.ones((4, 3)))
    assert y.shape == (4, 2)
    assert int(state["noise"]["calls"]) == 2


def test_bind_matches_calling_children_by_hand():
    net = Net()
    params, state = net.init(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (3, 3))
    h, _ = net.fc1.apply(params["fc1"], {}, x)
    h = jax.nn.relu(h)
    for i, b in enumerate(net.blocks):
        h, _ = b.apply(params["blocks"][str(i)], {}, h)
    expected, _ = net.fc2.apply(params["fc2"], {}, h)
    np.testing.assert_allclose(net.apply(params, state, x)[0], expected, rtol=1e-6)


def test_training_without_a_key_is_a_clear_error():
    net = Net()
    params, state = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"Noisy needs a PRNG key when train=True"):
        net.apply(params, state, jnp.ones((1, 3)), train=True)


def test_children_get_distinct_keys_and_results_are_reproducible():
    net = Net()
    params, state = net.init(jax.random.key(0))
    x = jnp.ones((2, 3))
    a, _ = net.apply(params, state, x, train=True, key=jax.random.key(7))
    b, _ = net.apply(params, state, x, train=True, key=jax.random.key(7))
    c, _ = net.apply(params, state, x, train=True, key=jax.random.key(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_grad_and_vmap_compose_with_apply():
    net = Net()
    params, state = net.init(jax.random.key(0))

    def loss(p: Any, x: jax.Array) -> jax.Array:
        return jnp.sum(net.apply(p, state, x)[0] ** 2)

    grads = jax.grad(loss)(params, jnp.ones((2, 3)))
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    per_example = jax.vmap(lambda x: net.apply(params, state, x)[0])(jnp.ones((6, 3)))
    assert per_example.shape == (6, 2)


def test_unknown_child_name_is_an_attribute_error():
    net = Net()
    params, state = net.init(jax.random.key(0))
    with pytest.raises(AttributeError, match="no child module 'fc3'"):
        _ = net.bind(params, state).fc3


def test_sequential_indexing_and_config_round_trip():
    seq = nn.Sequential(nn.Linear(2, 3), nn.Identity())
    assert len(seq) == 2 and seq[0] == nn.Linear(2, 3)
    assert jaxnets.from_config(jaxnets.to_config(seq)) == seq
    with pytest.raises(TypeError, match="argument 1 is int"):
        nn.Sequential(nn.Identity(), 3)


def test_models_are_hashable_specs_usable_as_static_args():
    assert hash(Net()) == hash(Net())
    assert jaxnets.from_config(jaxnets.to_config(Net())) == Net()


def test_linear_and_flatten_shapes():
    lin = nn.Linear(4, 3)
    p, s = lin.init(jax.random.key(0))
    assert lin.apply(p, s, jnp.ones((2, 7, 4)))[0].shape == (2, 7, 3)
    assert nn.Flatten().apply({}, {}, jnp.ones((2, 3, 4, 5)))[0].shape == (2, 60)
    assert nn.Flatten(0, 1).apply({}, {}, jnp.ones((2, 3, 4)))[0].shape == (6, 4)


# --- declared arrays: nn.Parameter / nn.Buffer ------------------------------------------------
@jaxnets.register(name="tests.Tokens")
class Tokens(nn.Module):
    """A ViT-like front: a class token and positions (params) and a step counter (buffer)."""

    dim: int = 4
    length: int = 3
    proj: nn.Linear = field(init=False)
    cls_token: nn.Parameter = field(init=False)
    pos: nn.Parameter = field(init=False)
    head: nn.Linear = field(init=False)
    steps: nn.Buffer = nn.Buffer((), init="zeros", dtype="int32")

    def __post_init__(self) -> None:
        object.__setattr__(self, "proj", nn.Linear(self.dim, self.dim))
        object.__setattr__(self, "cls_token", nn.Parameter((1, 1, self.dim)))
        object.__setattr__(
            self, "pos", nn.Parameter((1, self.length + 1, self.dim), init="normal(std=0.02)")
        )
        object.__setattr__(self, "head", nn.Linear(self.dim, 2))

    def apply(self, params, state, x, *, train=False, key=None):
        m = self.bind(params, state, train=train, key=key)
        x = m.proj(x)  # (N, L, D)
        cls = jnp.broadcast_to(m.cls_token, (x.shape[0], 1, self.dim))
        x = jnp.concatenate([cls, x], axis=1) + m.pos
        new_state = {**m.state, "steps": m.steps + 1}
        return m.head(x[:, 0]), new_state


def _torch_tokens(dim: int = 4, length: int = 3) -> Any:
    torch = pytest.importorskip("torch")

    class TorchTokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(dim, dim)
            self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = torch.nn.Parameter(torch.empty(1, length + 1, dim).normal_(std=0.02))
            self.head = torch.nn.Linear(dim, 2)
            self.register_buffer("steps", torch.zeros((), dtype=torch.int32))

        def forward(self, x: Any) -> Any:
            x = self.proj(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(x[:, 0])

    return TorchTokens()


def test_declared_arrays_give_torchs_keys_shapes_and_parameter_order():
    model, twin = Tokens(), _torch_tokens()
    params, state = model.init(jax.random.key(0))
    sd = model.state_dict(params, state)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        k: tuple(v.shape) for k, v in twin.state_dict().items()
    }
    # torch lists a module's own parameters before its children's
    assert list(jaxnets.flatten(params)) == [k for k, _ in twin.named_parameters()]
    assert list(state) == ["steps", "proj", "head"]


def test_declared_arrays_load_strictly_both_ways_and_match_torch(to_torch, close):
    import torch

    model, twin = Tokens(), _torch_tokens()
    params, state = model.load_state_dict(twin.state_dict())  # torch -> jaxnets, strict
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    y, new_state = model.apply(params, state, jnp.asarray(x))
    close(y, twin(torch.from_numpy(x)))
    assert int(new_state["steps"]) == 1
    fresh = model.init(jax.random.key(1))
    to_torch(model, *fresh, _torch_tokens())  # jaxnets -> torch, strict


def test_declared_arrays_use_their_initialisers_and_the_same_values_under_jit():
    model = Tokens(dim=8, length=63)
    key = jax.random.key(3)
    params, state = model.init(key)
    np.testing.assert_array_equal(params["cls_token"], np.zeros((1, 1, 8)))
    assert 0.015 < float(jnp.std(params["pos"])) < 0.025
    assert state["steps"].dtype == jnp.int32 and int(state["steps"]) == 0
    jax.tree.map(np.testing.assert_array_equal, jax.jit(model.init)(key), (params, state))


def test_declared_arrays_share_the_key_split_in_field_order():
    # Entries get keys in field order; children keep the keys they had with no declared arrays.
    params, _ = Tokens().init(jax.random.key(5))
    keys = nn.init.split(jax.random.key(5), 5)  # proj, cls_token, pos, head, steps
    np.testing.assert_array_equal(params["proj"]["weight"], nn.Linear(4, 4).init(keys[0])[0]["weight"])
    np.testing.assert_array_equal(params["pos"], nn.init.normal(keys[2], (1, 4, 4), 0.02))
    np.testing.assert_array_equal(params["head"]["bias"], nn.Linear(4, 2).init(keys[3])[0]["bias"])


def test_a_declared_field_with_a_default_is_stored_in_the_config_and_files(tmp_path):
    @jaxnets.register(name="tests.Scaled")
    class Scaled(nn.Module):
        scale: nn.Parameter = nn.Parameter(3, init="ones")

        def apply(self, params, state, x, *, train=False, key=None):
            return x * params["scale"], state

    model = Scaled(scale=nn.Parameter((2,), init="constant(val=0.5)", dtype="float32"))
    config = jaxnets.to_config(model)
    assert config["config"]["scale"]["__class__"] == "nn.Parameter"
    assert jaxnets.from_config(config) == model
    params, state = model.init(jax.random.key(0))
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.model == model
    np.testing.assert_array_equal(loaded.params["scale"], [0.5, 0.5])


def test_bad_declarations_fail_when_written():
    with pytest.raises(ValueError, match=r"unknown initialiser 'gauss'; accepted: zeros"):
        nn.Parameter((2,), init="gauss")
    with pytest.raises(TypeError, match=r"nn.Buffer: shape must be a tuple of non-negative ints"):
        nn.Buffer((2, -1))
    with pytest.raises(TypeError, match=r"nn.Parameter: unknown dtype 'float33'"):
        nn.Parameter((2,), dtype="float33")


def test_a_tuple_of_declared_arrays_is_an_error_not_a_silent_loss():
    @jaxnets.register(name="tests.Many")
    class Many(nn.Module):
        tokens: tuple = (nn.Parameter(2), nn.Parameter(3))

    with pytest.raises(TypeError, match=r"Many.tokens holds a tuple of nn.Parameter/nn.Buffer"):
        Many().init(jax.random.key(0))
