"""Activation layers against torch.nn with the same inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import JaxnetsWarning, nn

CASES = [
    (nn.ReLU(), torch.nn.ReLU()),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    (nn.SiLU(), torch.nn.SiLU()),
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (nn.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
]


@pytest.mark.parametrize("jax_layer, torch_layer", CASES, ids=lambda v: repr(v))
def test_matches_torch_with_same_shape(jax_layer, torch_layer, close, rng):
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(np.float32)
    assert jax_layer.init(jax.random.key(0)) == ({}, {})
    for train in (False, True):
        y, state = jax_layer.apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == x.shape and state == {}
        close(y, torch_layer(torch.from_numpy(x)))


@pytest.mark.parametrize("ndim, torch_dim", [(1, 0), (2, 1), (3, 0), (4, 1)])
def test_softmax_dim_none_follows_torch_rule_and_warns(ndim, torch_dim, close, rng):
    x = rng.standard_normal((2, 3, 4, 5)[:ndim]).astype(np.float32)
    with pytest.warns(JaxnetsWarning, match="pass dim= explicitly"):
        y, _ = nn.Softmax().apply({}, {}, jnp.asarray(x))
    close(y, torch.softmax(torch.from_numpy(x), dim=torch_dim))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU(approximate="erf")
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        nn.Softmax(dim=2).apply({}, {}, jnp.ones((2, 2)))


def test_activations_vmap_and_grad():
    for layer, _ in CASES:
        f = jax.vmap(
            jax.grad(
                lambda x, layer=layer: jnp.sum(
                    layer.apply({}, {}, x)[0] * jnp.arange(3.0).reshape(1, 3)
                )
            )
        )
        g = f(jnp.ones((2, 3, 3)))
        assert g.shape == (2, 3, 3) and bool(jnp.all(jnp.isfinite(g)))
