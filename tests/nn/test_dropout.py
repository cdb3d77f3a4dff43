"""Dropout: torch's meaning of p (probability of zeroing), scaling, eval identity, key errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import nn


def test_eval_is_identity_like_torch():
    x = jnp.arange(12.0).reshape(3, 4)
    y, state = nn.Dropout(0.5).apply({}, {}, x, train=False)
    t = torch.nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(y, t(torch.from_numpy(np.array(x))).numpy())
    assert state == {}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_train_zeroes_fraction_p_and_scales_by_one_over_one_minus_p(p):
    x = jnp.ones((200, 500))
    y, _ = nn.Dropout(p).apply({}, {}, x, train=True, key=jax.random.key(0))
    y = np.asarray(y)
    zero_frac = float(np.mean(y == 0))
    assert abs(zero_frac - p) < 0.01  # 100k samples: ~5 sigma
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    # torch's Dropout has the same statistics
    t = torch.nn.Dropout(p).train()(torch.ones(200, 500)).numpy()
    assert abs(float(np.mean(t == 0)) - zero_frac) < 0.015
    np.testing.assert_allclose(t[t != 0], 1 / (1 - p), rtol=1e-6)


def test_train_equals_torch_formula_given_the_mask(close):
    x = jax.random.normal(jax.random.key(3), (4, 6))
    y, _ = nn.Dropout(0.3).apply({}, {}, x, train=True, key=jax.random.key(1))
    keep = np.asarray(y) != 0
    close(y, torch.from_numpy(np.asarray(x) * keep / 0.7))


def test_keys_give_different_masks_and_same_key_same_mask():
    x = jnp.ones((64,))
    layer = nn.Dropout(0.5)
    a, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(0))
    b, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(1))
    c, _ = layer.apply({}, {}, x, train=True, key=jax.random.key(0))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_p_zero_and_one_edge_cases():
    x = jnp.ones((3, 3))
    np.testing.assert_array_equal(nn.Dropout(0.0).apply({}, {}, x, train=True)[0], x)
    np.testing.assert_array_equal(
        nn.Dropout(1.0).apply({}, {}, x, train=True, key=jax.random.key(0))[0], 0 * x
    )


def test_train_without_key_raises():
    with pytest.raises(ValueError, match="Dropout needs a PRNG key when train=True"):
        nn.Dropout(0.5).apply({}, {}, jnp.ones(3), train=True)


def test_bad_p_raises():
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_shape_and_dtype_kept_under_jit():
    f = jax.jit(lambda x, k: nn.Dropout(0.2).apply({}, {}, x, train=True, key=k)[0])
    y = f(jnp.ones((2, 3, 4), jnp.bfloat16), jax.random.key(0))
    assert y.shape == (2, 3, 4) and y.dtype == jnp.bfloat16
