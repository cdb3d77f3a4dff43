"""Dropout: torch's meaning of p (probability of zeroing), scaling, eval identity, key errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import JaxnetsWarning, nn


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


CHANNEL_CASES = [
    (nn.Dropout1d, torch.nn.Dropout1d, (8, 16, 30)),
    (nn.Dropout1d, torch.nn.Dropout1d, (16, 30)),  # unbatched (C, L)
    (nn.Dropout2d, torch.nn.Dropout2d, (8, 16, 5, 6)),
    (nn.Dropout3d, torch.nn.Dropout3d, (4, 16, 3, 4, 5)),
    (nn.Dropout3d, torch.nn.Dropout3d, (16, 3, 4, 5)),  # unbatched (C, D, H, W)
]


@pytest.mark.parametrize("jcls, tcls, shape", CHANNEL_CASES, ids=str)
def test_channel_dropout_drops_whole_channels_like_torch(jcls, tcls, shape, close):
    x = jax.random.normal(jax.random.key(0), shape) + 3.0  # no exact zeros in the input
    layer = jcls(0.5)
    y, state = layer.apply({}, {}, x, train=True, key=jax.random.key(1))
    t = tcls(0.5).train()(torch.from_numpy(np.array(x))).numpy()
    spatial = tuple(range(len(shape) - (3 if jcls is nn.Dropout3d else 2 if jcls is nn.Dropout2d else 1), len(shape)))
    for out in (np.asarray(y), t):
        zero = out == 0
        # every channel is all-zero or untouched-but-scaled, never a mix
        assert np.array_equal(zero.all(axis=spatial), zero.any(axis=spatial))
        kept = ~zero
        np.testing.assert_allclose(out[kept], 2.0 * np.asarray(x)[kept], rtol=1e-6)
    n_channels = int(np.prod([s for i, s in enumerate(shape) if i not in spatial]))
    frac = float(np.mean((np.asarray(y) == 0).all(axis=spatial)))
    assert abs(frac - 0.5) < 4 * (0.25 / n_channels) ** 0.5
    # eval is the identity in both
    close(layer.apply({}, {}, x, train=False)[0], tcls(0.5).eval()(torch.from_numpy(np.array(x))))
    assert state == {}


def test_dropout2d_reads_3d_input_as_torch_does_and_warns():
    x = jnp.ones((4, 32, 5))
    with pytest.warns(JaxnetsWarning, match=r"treats it as \(N, C, L\)"):
        y, _ = nn.Dropout2d(0.5).apply({}, {}, x, train=True, key=jax.random.key(0))
    zero = np.asarray(y) == 0
    assert np.array_equal(zero.all(axis=2), zero.any(axis=2))  # channels of dim 1 dropped whole


def test_channel_dropout_rejects_wrong_rank_and_missing_key():
    with pytest.raises(ValueError, match=r"Dropout1d: expected input \(N, C, L\) or unbatched \(C, L\)"):
        nn.Dropout1d().apply({}, {}, jnp.ones((2, 3, 4, 5)), train=True, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"Dropout3d: expected input \(N, C, D, H, W\)"):
        nn.Dropout3d().apply({}, {}, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="Dropout2d needs a PRNG key"):
        nn.Dropout2d().apply({}, {}, jnp.ones((2, 3, 4, 4)), train=True)


def test_inplace_is_accepted_and_stored():
    layer = nn.Dropout(0.2, inplace=True)
    assert jaxnets.from_config(jaxnets.to_config(layer)) == layer
    np.testing.assert_array_equal(layer.apply({}, {}, jnp.ones(3))[0], jnp.ones(3))


@pytest.mark.parametrize(
    "layer",
    [nn.Dropout(0.1), nn.Dropout2d(0.1), nn.BatchNorm1d(3), nn.MultiheadAttention(3, 1),
     nn.InstanceNorm1d(3, track_running_stats=True), nn.LSTM(3, 3, 2, dropout=0.1),
     nn.TransformerEncoderLayer(3, 1, 4)],
    ids=lambda m: type(m).__name__,
)  # fmt: skip
def test_traced_train_explains_static_argnames(layer):
    params, state = layer.init(jax.random.key(0))
    x = jnp.ones((2, 3, 4)) if not isinstance(layer, nn.Dropout2d) else jnp.ones((2, 3, 4, 4))
    if isinstance(layer, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.LSTM)):
        x = jnp.ones((2, 4, 3))
    f = jax.jit(layer.apply)
    with pytest.raises(
        ValueError, match=rf"{type(layer).__name__}: train is a traced value.*static_argnames='train'"
    ):
        f(params, state, x, train=True, key=jax.random.key(1))
    # the fix the message gives works
    g = jax.jit(layer.apply, static_argnames="train")
    g(params, state, x, train=True, key=jax.random.key(1))
