"""The layer protocol: composite models, bind, key threading, and the keys they produce."""

from __future__ import annotations

from dataclasses import dataclass
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
