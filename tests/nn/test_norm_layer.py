"""LayerNorm, GroupNorm, RMSNorm and LocalResponseNorm against torch.nn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def _perturbed(layer, seed=0):
    """Params with non-trivial values, so a wrong use of weight or bias would show."""
    params, state = layer.init(jax.random.key(seed))
    k = jax.random.key(seed + 100)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(k, p.shape), params)
    return params, state


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(normalized_shape=6), (3, 6)),
        (dict(normalized_shape=(4, 6), eps=1e-3), (2, 3, 4, 6)),
        (dict(normalized_shape=6, elementwise_affine=False), (2, 5, 6)),
        (dict(normalized_shape=6, bias=False), (2, 5, 6)),
    ],
    ids=str,
)
def test_layernorm_matches_torch(kwargs, shape, to_torch, close, rng):
    layer = nn.LayerNorm(**kwargs)
    params, state = _perturbed(layer)
    t = to_torch(layer, params, state, torch.nn.LayerNorm(**kwargs))
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    for train in (False, True):
        y, _ = layer.apply(params, state, jnp.asarray(x), train=train)
        assert y.shape == shape
        close(y, t(torch.from_numpy(x)))


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(num_groups=2, num_channels=6), (3, 6, 4, 5)),
        (dict(num_groups=3, num_channels=6, eps=1e-3), (2, 6, 7)),
        (dict(num_groups=1, num_channels=4, affine=False), (2, 4)),
    ],
    ids=str,
)
def test_groupnorm_matches_torch(kwargs, shape, to_torch, close, rng):
    layer = nn.GroupNorm(**kwargs)
    params, state = _perturbed(layer)
    t = to_torch(layer, params, state, torch.nn.GroupNorm(**kwargs))
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    for train in (False, True):
        y, _ = layer.apply(params, state, jnp.asarray(x), train=train)
        assert y.shape == shape
        close(y, t(torch.from_numpy(x)))


@pytest.mark.parametrize(
    "kwargs, shape, dtype",
    [
        (dict(normalized_shape=6), (3, 6), np.float32),
        (dict(normalized_shape=(4, 6), eps=1e-3), (2, 3, 4, 6), np.float32),
        (dict(normalized_shape=6, elementwise_affine=False), (2, 5, 6), np.float32),
        (dict(normalized_shape=6), (2, 5, 6), np.float64),  # eps=None: the dtype's epsilon
    ],
    ids=str,
)
def test_rmsnorm_matches_torch_and_loads_strictly(x64, kwargs, shape, dtype, to_torch, close, rng):
    layer = nn.RMSNorm(**kwargs)
    params, state = _perturbed(layer)
    t = to_torch(layer, params, state, torch.nn.RMSNorm(**kwargs))
    back, _ = jaxnets.load_state_dict(layer, t.state_dict())
    x = (rng.standard_normal(shape) * 1e-3).astype(dtype)  # small: eps matters
    t = t.to(torch.float64) if dtype == np.float64 else t
    with x64(dtype == np.float64):
        for train in (False, True):
            y, _ = layer.apply(back, state, jnp.asarray(x), train=train)
            assert y.dtype == dtype
            close(y, t(torch.from_numpy(x)))


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(size=2), (2, 5, 4, 3)),
        (dict(size=5, alpha=1e-2, beta=0.5, k=2.0), (2, 7, 3)),
        (dict(size=3, alpha=0.1), (1, 4, 2, 3, 2)),
    ],
    ids=str,
)
def test_local_response_norm_matches_torch(kwargs, shape, close, rng):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    want = torch.nn.LocalResponseNorm(**kwargs)(torch.from_numpy(x))
    for train in (False, True):
        y, state = nn.LocalResponseNorm(**kwargs).apply({}, {}, jnp.asarray(x), train=train)
        close(y, want)
        assert state == {}
    with pytest.raises(ValueError, match=r"LocalResponseNorm: expected input \(N, C, \*\) with 3 or more dims"):
        nn.LocalResponseNorm(2).apply({}, {}, jnp.ones((2, 3)))


def test_groupnorm_without_bias_and_wrong_channels():
    layer = nn.GroupNorm(2, 4, bias=False)
    params, _ = layer.init(jax.random.key(0))
    assert list(params) == list(torch.nn.GroupNorm(2, 4, bias=False).state_dict()) == ["weight"]
    with pytest.raises(ValueError, match=r"GroupNorm: expected input \(N, C, \*, \*\) with C = num_channels = 4"):
        layer.apply(params, {}, jnp.ones((2, 3, 5, 5)))
