"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d against torch.nn, borders and ceil mode included."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import nn

MAX_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
]
AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 1), ceil_mode=True, count_include_pad=True),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 1), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, padding=1, divisor_override=5),
]


def _out(n, k, s, p, d, ceil):
    """The docstring's formula: floor/ceil((n + 2p - d(k-1) - 1)/s) + 1, minus a window starting in the pad."""
    r = (n + 2 * p - d * (k - 1) - 1) / s
    out = (math.ceil(r) if ceil else math.floor(r)) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _expected_shape(kw, h, w):
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    k = pair(kw["kernel_size"])
    s = pair(kw.get("stride") or kw["kernel_size"])
    p, d = pair(kw.get("padding", 0)), pair(kw.get("dilation", 1))
    return tuple(_out(n, *a, kw.get("ceil_mode", False)) for n, a in zip((h, w), zip(k, s, p, d)))


@pytest.mark.parametrize("kwargs", MAX_CASES, ids=str)
@pytest.mark.parametrize("hw", [(7, 8), (6, 5)])
def test_maxpool2d_matches_torch(kwargs, hw, close, rng):
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    want = torch.nn.MaxPool2d(**kwargs)(torch.from_numpy(x))
    for train in (False, True):
        y, state = nn.MaxPool2d(**kwargs).apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == (2, 3, *_expected_shape(kwargs, *hw)) == tuple(want.shape)
        close(y, want)
        assert state == {}


@pytest.mark.parametrize("kwargs", AVG_CASES, ids=str)
@pytest.mark.parametrize("hw", [(7, 8), (6, 5)])
def test_avgpool2d_matches_torch(kwargs, hw, close, rng):
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    want = torch.nn.AvgPool2d(**kwargs)(torch.from_numpy(x))
    for train in (False, True):
        y, _ = nn.AvgPool2d(**kwargs).apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == (2, 3, *_expected_shape(kwargs, *hw)) == tuple(want.shape)
        close(y, want)


@pytest.mark.parametrize("out", [1, 3, (2, 5), (4, None), (7, 3)], ids=str)
def test_adaptive_avgpool2d_matches_torch_for_non_divisible_sizes(out, close, rng):
    x = rng.standard_normal((2, 3, 10, 7)).astype(np.float32)
    want = torch.nn.AdaptiveAvgPool2d(out)(torch.from_numpy(x))
    pair = (out, out) if isinstance(out, int) else out
    for train in (False, True):
        y, _ = nn.AdaptiveAvgPool2d(out).apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == (2, 3, pair[0] or 10, pair[1] or 7) == tuple(want.shape)
        close(y, want)


def test_pools_accept_unbatched_inputs(close, rng):
    x = rng.standard_normal((3, 6, 6)).astype(np.float32)
    for jl, tl in [
        (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (nn.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)),
        (nn.AdaptiveAvgPool2d(4), torch.nn.AdaptiveAvgPool2d(4)),
    ]:
        close(jl.apply({}, {}, jnp.asarray(x))[0], tl(torch.from_numpy(x)))


def test_pools_have_no_params_and_differentiate_under_jit():
    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(3)):
        assert layer.init(jax.random.key(0)) == ({}, {})
        g = jax.jit(jax.grad(lambda x, layer=layer: jnp.sum(layer.apply({}, {}, x)[0])))(
            jnp.ones((1, 1, 5, 5))
        )
        assert g.shape == (1, 1, 5, 5) and bool(jnp.all(jnp.isfinite(g)))


def test_pool_errors():
    with pytest.raises(ValueError, match="at most half of kernel size"):
        nn.MaxPool2d(2, padding=2).apply({}, {}, jnp.ones((1, 1, 6, 6)))
    with pytest.raises(ValueError, match="return_indices"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match=r"expected input \(N, C, H, W\) or \(C, H, W\)"):
        nn.AdaptiveAvgPool2d(2).apply({}, {}, jnp.ones((4, 4)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=(2, 3)),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, ceil_mode=True),
    ],
    ids=str,
)
def test_maxpool_gradient_goes_to_first_maximum_like_torch(kwargs, close, rng):
    # small integers: many ties inside windows, where gradient conventions differ
    x = rng.integers(0, 3, size=(2, 2, 7, 9)).astype(np.float32)
    x[0, 0] = 1.0  # a channel of all ties
    upstream = rng.standard_normal(
        tuple(torch.nn.MaxPool2d(**kwargs)(torch.from_numpy(x)).shape)
    ).astype(np.float32)
    layer = nn.MaxPool2d(**kwargs)
    g = jax.jit(jax.grad(lambda x: jnp.sum(layer.apply({}, {}, x)[0] * upstream)))(jnp.asarray(x))
    tx = torch.from_numpy(x).requires_grad_(True)
    (torch.nn.MaxPool2d(**kwargs)(tx) * torch.from_numpy(upstream)).sum().backward()
    close(g, tx.grad)


def test_maxpool_propagates_nan_and_inf_like_torch():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 2, 2] = -np.inf
    x[0, 0, 3, 3] = np.inf
    y, _ = nn.MaxPool2d(2).apply({}, {}, jnp.asarray(x))
    want = torch.nn.MaxPool2d(2)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.asarray(y), want)


POOL_1D_3D = [
    (nn.MaxPool1d, torch.nn.MaxPool1d, dict(kernel_size=3), (2, 3, 11)),
    (nn.MaxPool1d, torch.nn.MaxPool1d, dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 3, 10)),
    (nn.MaxPool1d, torch.nn.MaxPool1d, dict(kernel_size=2), (3, 9)),  # unbatched (C, L)
    (nn.AvgPool1d, torch.nn.AvgPool1d, dict(kernel_size=3, stride=2, padding=1), (2, 3, 10)),
    (nn.AvgPool1d, torch.nn.AvgPool1d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), (2, 3, 10)),
    (nn.MaxPool3d, torch.nn.MaxPool3d, dict(kernel_size=2), (2, 3, 4, 6, 5)),
    (nn.MaxPool3d, torch.nn.MaxPool3d, dict(kernel_size=(3, 2, 2), stride=(2, 1, 2), padding=(1, 1, 0)), (2, 3, 5, 6, 5)),
    (nn.AvgPool3d, torch.nn.AvgPool3d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), (2, 3, 5, 6, 7)),
    (nn.AvgPool3d, torch.nn.AvgPool3d, dict(kernel_size=2, divisor_override=3), (3, 4, 4, 4)),
]


@pytest.mark.parametrize("jcls, tcls, kwargs, shape", POOL_1D_3D, ids=str)
def test_1d_and_3d_pools_match_torch(jcls, tcls, kwargs, shape, close, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    want = tcls(**kwargs)(torch.from_numpy(x))
    for train in (False, True):
        y, state = jcls(**kwargs).apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == tuple(want.shape) and state == {}
        close(y, want)


@pytest.mark.parametrize(
    "jcls, tcls, out, shape",
    [
        (nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool1d, 3, (2, 3, 10)),
        (nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool1d, 7, (3, 5)),  # upsampling, unbatched
        (nn.AdaptiveAvgPool3d, torch.nn.AdaptiveAvgPool3d, (2, None, 3), (2, 3, 5, 4, 7)),
        (nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool1d, 4, (2, 3, 10)),
        (nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, 1, (2, 3, 7, 5)),
        (nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, (3, 4), (2, 3, 10, 7)),
        (nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, (None, 2), (3, 10, 7)),
        (nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, (9, 8), (2, 3, 5, 4)),
        (nn.AdaptiveMaxPool3d, torch.nn.AdaptiveMaxPool3d, (2, 3, 2), (1, 2, 5, 7, 3)),
    ],
    ids=str,
)
def test_adaptive_pools_match_torch(jcls, tcls, out, shape, close, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    want = tcls(out)(torch.from_numpy(x))
    for train in (False, True):
        y, _ = jcls(out).apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == tuple(want.shape)
        close(y, want)


def test_adaptive_max_pool_propagates_nan_and_gradients_like_torch(close, rng):
    x = rng.standard_normal((1, 2, 7, 5)).astype(np.float32)
    x[0, 0, 3, 2] = np.nan
    y, _ = nn.AdaptiveMaxPool2d((3, 2)).apply({}, {}, jnp.asarray(x))
    np.testing.assert_array_equal(np.isnan(np.asarray(y)), torch.nn.AdaptiveMaxPool2d((3, 2))(torch.from_numpy(x)).isnan().numpy())
    x = rng.standard_normal((2, 2, 7, 5)).astype(np.float32)
    g = jax.grad(lambda v: jnp.sum(nn.AdaptiveMaxPool2d((3, 2)).apply({}, {}, v)[0] ** 2))(jnp.asarray(x))
    tx = torch.from_numpy(x).requires_grad_(True)
    (torch.nn.AdaptiveMaxPool2d((3, 2))(tx) ** 2).sum().backward()
    close(g, tx.grad)


def test_new_pool_errors():
    with pytest.raises(ValueError, match="AdaptiveMaxPool2d: return_indices=True is not supported"):
        nn.AdaptiveMaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match=r"MaxPool1d: expected input \(N, C, L\) or \(C, L\)"):
        nn.MaxPool1d(2).apply({}, {}, jnp.ones((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool3d: output_size must be an int or 3 ints"):
        nn.AdaptiveAvgPool3d((2, 2)).apply({}, {}, jnp.ones((1, 2, 4, 4, 4)))
