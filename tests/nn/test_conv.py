"""Conv1d/2d/3d and ConvTranspose1d/2d/3d against torch.nn with the same weights."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def _out(size: int, k: int, s: int, p: int, d: int) -> int:
    """The docstrings' output-size formula."""
    return math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1


CONV2D_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(
        in_channels=4,
        out_channels=6,
        kernel_size=(3, 2),
        stride=(2, 1),
        padding=(1, 2),
        dilation=(1, 2),
    ),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, bias=False),
    dict(in_channels=3, out_channels=4, kernel_size=4, padding="same", dilation=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid", stride=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=(2, 1), padding_mode="replicate"),
    dict(
        in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="circular", stride=2
    ),
]


@pytest.mark.parametrize("kwargs", CONV2D_CASES, ids=lambda c: str(c))
def test_conv2d_matches_torch(kwargs, to_torch, close, rng):
    layer = nn.Conv2d(**kwargs)
    params, state = layer.init(jax.random.key(1))
    t = to_torch(layer, params, state, torch.nn.Conv2d(**kwargs))
    x = rng.standard_normal((2, kwargs["in_channels"], 9, 8)).astype(np.float32)
    for train in (False, True):
        y, new_state = layer.apply(params, state, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))
        assert new_state == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=3, out_channels=5, kernel_size=3),
        dict(
            in_channels=4, out_channels=2, kernel_size=4, stride=2, padding=3, dilation=2, groups=2
        ),
        dict(in_channels=3, out_channels=5, kernel_size=2, padding="same", bias=False),
        dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, padding_mode="circular"),
    ],
    ids=str,
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note
def test_conv1d_matches_torch(kwargs, to_torch, close, rng):
    layer = nn.Conv1d(**kwargs)
    params, state = layer.init(jax.random.key(2))
    t = to_torch(layer, params, state, torch.nn.Conv1d(**kwargs))
    x = rng.standard_normal((2, kwargs["in_channels"], 11)).astype(np.float32)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    close(y, t(torch.from_numpy(x)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=3, out_channels=5, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1),
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=(3, 2),
            stride=(2, 3),
            padding=(2, 0),
            output_padding=(1, 2),
            groups=2,
        ),
        dict(
            in_channels=2,
            out_channels=3,
            kernel_size=3,
            stride=2,
            dilation=2,
            output_padding=1,
            bias=False,
        ),
    ],
    ids=str,
)
def test_conv_transpose2d_matches_torch(kwargs, to_torch, close, rng):
    layer = nn.ConvTranspose2d(**kwargs)
    params, state = layer.init(jax.random.key(3))
    t = to_torch(layer, params, state, torch.nn.ConvTranspose2d(**kwargs))
    x = rng.standard_normal((2, kwargs["in_channels"], 5, 6)).astype(np.float32)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    close(y, t(torch.from_numpy(x)))


def test_conv2d_output_shape_agrees_with_docstring():
    for kw in CONV2D_CASES:
        layer = nn.Conv2d(**kw)
        params, state = layer.init(jax.random.key(0))
        y, _ = layer.apply(params, state, jnp.zeros((2, kw["in_channels"], 9, 8)))
        pad = kw.get("padding", 0)
        k = kw["kernel_size"] if isinstance(kw["kernel_size"], tuple) else (kw["kernel_size"],) * 2
        s = kw.get("stride", 1)
        s = s if isinstance(s, tuple) else (s, s)
        d = kw.get("dilation", 1)
        d = d if isinstance(d, tuple) else (d, d)
        if pad == "same":
            want = (9, 8)
        else:
            p = (0, 0) if pad == "valid" else (pad if isinstance(pad, tuple) else (pad, pad))
            want = tuple(_out(n, *a) for n, a in zip((9, 8), zip(k, s, p, d)))
        assert y.shape == (2, kw["out_channels"], *want), kw


def test_conv1d_and_transpose_output_shapes_agree_with_docstrings():
    c1 = nn.Conv1d(3, 4, 5, stride=2, padding=1, dilation=2)
    y, _ = c1.apply(*c1.init(jax.random.key(0)), jnp.zeros((2, 3, 20)))
    assert y.shape == (2, 4, _out(20, 5, 2, 1, 2))
    ct = nn.ConvTranspose2d(
        3, 4, (3, 4), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 1)
    )
    y, _ = ct.apply(*ct.init(jax.random.key(0)), jnp.zeros((2, 3, 5, 6)))
    assert y.shape == (2, 4, (5 - 1) * 2 - 2 + 2 + 1 + 1, (6 - 1) * 3 - 0 + 3 + 2 + 1)


def test_unbatched_input_matches_batched():
    layer = nn.Conv2d(3, 4, 3, padding=1)
    params, state = layer.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 6, 6))
    y, _ = layer.apply(params, state, x)
    yb, _ = layer.apply(params, state, x[None])
    np.testing.assert_allclose(y, yb[0], rtol=1e-6)


@pytest.mark.parametrize(
    "jax_layer, torch_layer",
    [
        (nn.Conv2d(6, 4, (3, 5), groups=2), torch.nn.Conv2d(6, 4, (3, 5), groups=2)),
        (nn.Conv1d(3, 8, 7), torch.nn.Conv1d(3, 8, 7)),
        (nn.ConvTranspose2d(4, 6, 3, groups=2), torch.nn.ConvTranspose2d(4, 6, 3, groups=2)),
    ],
    ids=["conv2d", "conv1d", "convtranspose2d"],
)
def test_default_init_matches_torch_shapes_and_bounds(jax_layer, torch_layer):
    params, _ = jax_layer.init(jax.random.key(0))
    torch_sd = torch_layer.state_dict()
    assert list(params) == list(torch_sd)
    for name, t in torch_sd.items():
        assert params[name].shape == tuple(t.shape)
        # kaiming_uniform(a=sqrt(5)) and the bias init are both U(+-1/sqrt(fan_in))
        bound = 1 / math.sqrt(torch.nn.init._calculate_fan_in_and_fan_out(torch_layer.weight)[0])
        assert float(jnp.max(jnp.abs(params[name]))) <= bound
        assert float(jnp.max(jnp.abs(params[name]))) > 0.7 * bound
        assert float(t.abs().max()) <= bound


def test_conv_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv1d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(3, 4, 3, stride=1, output_padding=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=2, out_channels=4, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 1), stride=(2, 1, 1), padding=(1, 0, 1), groups=2),
        dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", dilation=2, bias=False),
        dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="replicate"),
    ],
    ids=str,
)
def test_conv3d_matches_torch_and_loads_strictly(kwargs, to_torch, close, rng):
    layer = nn.Conv3d(**kwargs)
    params, state = layer.init(jax.random.key(4))
    t = to_torch(layer, params, state, torch.nn.Conv3d(**kwargs))
    back, _ = jaxnets.load_state_dict(layer, t.state_dict())
    x = rng.standard_normal((2, kwargs["in_channels"], 5, 6, 4)).astype(np.float32)
    for train in (False, True):
        y, _ = layer.apply(back, state, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))
    y, _ = layer.apply(params, state, jnp.asarray(x[0]))  # unbatched (C, D, H, W)
    close(y, t(torch.from_numpy(x[0])))


@pytest.mark.parametrize(
    "jcls, tcls, kwargs, spatial",
    [
        (nn.ConvTranspose1d, torch.nn.ConvTranspose1d, dict(in_channels=3, out_channels=5, kernel_size=3), (7,)),
        (
            nn.ConvTranspose1d,
            torch.nn.ConvTranspose1d,
            dict(in_channels=4, out_channels=6, kernel_size=4, stride=3, padding=1, output_padding=2, groups=2, dilation=1),
            (7,),
        ),
        (
            nn.ConvTranspose3d,
            torch.nn.ConvTranspose3d,
            dict(in_channels=2, out_channels=3, kernel_size=(3, 2, 2), stride=2, padding=(1, 0, 0), output_padding=(1, 0, 1)),
            (3, 4, 3),
        ),
    ],
    ids=str,
)
def test_conv_transpose_1d_3d_match_torch_and_load_strictly(jcls, tcls, kwargs, spatial, to_torch, close, rng):
    layer = jcls(**kwargs)
    params, state = layer.init(jax.random.key(5))
    t = to_torch(layer, params, state, tcls(**kwargs))
    back, _ = jaxnets.load_state_dict(layer, t.state_dict())
    x = rng.standard_normal((2, kwargs["in_channels"], *spatial)).astype(np.float32)
    for train in (False, True):
        y, _ = layer.apply(back, state, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))


@pytest.mark.parametrize(
    "layer, x_shape, layout, transpose",
    [
        (nn.Conv2d(3, 8, 3), (4, 32, 32, 3), r"\(N, C, H, W\)", r"x\.transpose\(0, 3, 1, 2\)"),
        (nn.Conv2d(3, 8, 3), (32, 32, 3), r"\(N, C, H, W\)", r"x\.transpose\(2, 0, 1\)"),
        (nn.Conv1d(5, 8, 3), (4, 20, 5), r"\(N, C, L\)", r"x\.transpose\(0, 2, 1\)"),
        (nn.Conv3d(2, 8, 3), (1, 6, 6, 6, 2), r"\(N, C, D, H, W\)", r"x\.transpose\(0, 4, 1, 2, 3\)"),
        (nn.ConvTranspose2d(3, 8, 3), (4, 9, 9, 3), r"\(N, C, H, W\)", r"x\.transpose\(0, 3, 1, 2\)"),
        (nn.BatchNorm2d(3), (4, 9, 9, 3), r"\(N, C, H, W\)", r"x\.transpose\(0, 3, 1, 2\)"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_channels_last_input_names_the_layout_the_count_and_the_transpose(layer, x_shape, layout, transpose):
    params, state = layer.init(jax.random.key(0))
    name = type(layer).__name__
    found = x_shape[0 if x_shape == (32, 32, 3) else 1]  # the channel axis: 0 when unbatched
    with pytest.raises(ValueError, match=rf"{name}: expected input {layout} with C = .* got shape .* with {found} there"):
        layer.apply(params, state, jnp.ones(x_shape))
    with pytest.raises(ValueError, match=rf"channels-last, transpose it first: {transpose}"):
        layer.apply(params, state, jnp.ones(x_shape))


def test_wrong_channel_count_without_a_channels_last_reading_has_no_transpose_hint():
    layer = nn.Conv2d(3, 8, 3)
    params, state = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"C = in_channels = 3 on axis 1 .*got shape \(2, 4, 9, 9\) with 4 there\. The layer: Conv2d\(in_channels=3") as err:
        layer.apply(params, state, jnp.ones((2, 4, 9, 9)))
    assert "transpose" not in str(err.value)


def test_conv_rejects_wrong_input_rank():
    layer = nn.Conv2d(3, 4, 3)
    params, state = layer.init(jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"Conv2d: expected input of shape \(N, C, 2 spatial dims\)"
    ):
        layer.apply(params, state, jnp.zeros((1, 1, 3, 6, 6)))


def test_conv_jits_and_differentiates():
    layer = nn.Conv2d(2, 3, 3, padding=1)
    params, state = layer.init(jax.random.key(0))
    x = jnp.ones((1, 2, 5, 5))
    f = jax.jit(lambda p: jnp.sum(layer.apply(p, state, x)[0] ** 2))
    g = jax.grad(f)(params)
    assert g["weight"].shape == (3, 2, 3, 3) and bool(jnp.all(jnp.isfinite(g["weight"])))
