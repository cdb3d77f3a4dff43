"""Embedding against torch.nn.Embedding: lookups, init statistics, padding_idx."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_lookup_matches_torch(padding_idx, to_torch, close):
    layer = nn.Embedding(10, 4, padding_idx=padding_idx)
    params, state = layer.init(jax.random.key(0))
    t = to_torch(layer, params, state, torch.nn.Embedding(10, 4, padding_idx=padding_idx))
    idx = np.array([[0, 2, 9], [9, 1, 2]])
    for train in (False, True):
        y, _ = layer.apply(params, state, jnp.asarray(idx), train=train)
        assert y.shape == (2, 3, 4)
        close(y, t(torch.from_numpy(idx)))


def test_init_is_standard_normal_with_zero_padding_row():
    params, _ = nn.Embedding(1000, 64, padding_idx=-2).init(jax.random.key(0))
    w = np.asarray(params["weight"])
    assert w.shape == tuple(torch.nn.Embedding(1000, 64).weight.shape)
    np.testing.assert_array_equal(w[998], 0)
    rest = np.delete(w, 998, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01


def test_padding_row_gets_no_gradient_as_in_torch():
    layer = nn.Embedding(5, 3, padding_idx=1)
    params, state = layer.init(jax.random.key(0))
    idx = jnp.array([0, 1, 1, 4])
    g = jax.grad(
        lambda p: jnp.sum(layer.apply(p, state, idx)[0] ** 2 + layer.apply(p, state, idx)[0])
    )(params)
    t = torch.nn.Embedding(5, 3, padding_idx=1)
    t.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in jaxnets.state_dict(params).items()}
    )
    out = t(torch.from_numpy(np.array(idx)))
    (out**2 + out).sum().backward()
    np.testing.assert_allclose(g["weight"], t.weight.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(g["weight"][1], 0)


def test_bad_padding_idx_raises():
    with pytest.raises(ValueError, match=r"padding_idx must be within \[-5, 5\), got 5"):
        nn.Embedding(5, 3, padding_idx=5)
