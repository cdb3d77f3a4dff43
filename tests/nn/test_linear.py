"""Linear, Bilinear, Identity, Flatten and Unflatten against torch.nn, and Linear's input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def test_linear_wrong_feature_axis_names_the_axis_and_the_fix():
    layer = nn.Linear(4, 3)
    params, state = layer.init(jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"Linear: expected input \(\.\.\., 4\) with in_features = 4 on the last axis, got "
        r"shape \(2, 4, 5\)\. Axis 1 has 4: .*jnp\.moveaxis\(x, 1, -1\)",
    ):
        layer.apply(params, state, jnp.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"got shape \(2, 5\)\. The layer: Linear\(in_features=4"):
        layer.apply(params, state, jnp.ones((2, 5)))


@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_matches_torch_and_loads_strictly(bias, to_torch, close, rng):
    layer = nn.Bilinear(3, 5, 4, bias=bias)
    params, state = layer.init(jax.random.key(0))
    t = to_torch(layer, params, state, torch.nn.Bilinear(3, 5, 4, bias=bias))
    assert list(params) == list(t.state_dict())
    x1 = rng.standard_normal((2, 7, 3)).astype(np.float32)
    x2 = rng.standard_normal((2, 7, 5)).astype(np.float32)
    for train in (False, True):
        y, _ = layer.apply(params, state, jnp.asarray(x1), jnp.asarray(x2), train=train)
        close(y, t(torch.from_numpy(x1), torch.from_numpy(x2)))
    back, _ = jaxnets.load_state_dict(layer, t.state_dict())
    assert jax.tree.structure(back) == jax.tree.structure(params)
    bound = 1 / np.sqrt(3)  # torch: U(+-1/sqrt(in1_features)) for weight and bias
    assert float(jnp.max(jnp.abs(params["weight"]))) <= bound
    with pytest.raises(ValueError, match=r"Bilinear: expected inputs \(\.\.\., 3\) and \(\.\.\., 5\)"):
        layer.apply(params, state, jnp.ones((2, 5)), jnp.ones((2, 3)))


def test_identity_accepts_and_ignores_any_arguments_like_torch():
    layer = nn.Identity(54, unused_argument1=0.1, unused_argument2=False)
    assert layer == nn.Identity() and hash(layer) == hash(nn.Identity())
    assert jaxnets.to_config(layer) == {"__class__": "nn.Identity", "config": {}}
    assert jaxnets.from_config(jaxnets.to_config(layer)) == nn.Identity()
    x = jnp.arange(6.0)
    assert layer.apply({}, {}, x)[0] is x
    t = torch.nn.Identity(54, unused_argument1=0.1)
    np.testing.assert_array_equal(np.asarray(layer.apply({}, {}, x)[0]), t(torch.arange(6.0)).numpy())


@pytest.mark.parametrize("dim, sizes", [(1, (2, 3, 4)), (-1, (4, -1)), (0, (1, 2))])
def test_unflatten_matches_torch(dim, sizes, rng):
    x = rng.standard_normal((2, 24)).astype(np.float32)
    y, _ = nn.Unflatten(dim, sizes).apply({}, {}, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), torch.nn.Unflatten(dim, sizes)(torch.from_numpy(x)).numpy())
    assert nn.Unflatten(1, [2, 3, 4]) == nn.Unflatten(1, (2, 3, 4))  # lists become tuples
    with pytest.raises(ValueError, match=r"Unflatten: sizes \(5, 5\) do not fill dim 1"):
        nn.Unflatten(1, (5, 5)).apply({}, {}, jnp.asarray(x))


def test_flatten_matches_torch(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for args in [(), (0, 1), (2, -1)]:
        y, _ = nn.Flatten(*args).apply({}, {}, jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(y), torch.nn.Flatten(*args)(torch.from_numpy(x)).numpy())
