"""jaxnets.nn.functional against torch.nn.functional: interpolate, pixel_shuffle/unshuffle."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from jaxnets.nn import functional as F

CASES = [
    # (input shape, kwargs)
    ((2, 3, 5), dict(scale_factor=2)),
    ((2, 3, 5), dict(size=12)),
    ((2, 3, 7), dict(size=3)),
    ((2, 3, 5, 4), dict(scale_factor=2)),
    ((2, 3, 5, 4), dict(scale_factor=(1.7, 2.5))),
    ((2, 3, 5, 4), dict(size=(7, 3))),
    ((2, 3, 5, 4), dict(scale_factor=0.6)),
    ((2, 3, 5, 4), dict(scale_factor=1.7, recompute_scale_factor=True)),
    ((2, 3, 5, 4), dict(size=(9, 11), mode="nearest-exact")),
    ((2, 3, 5, 4), dict(scale_factor=1.5, mode="nearest-exact")),
    ((2, 3, 3, 4, 5), dict(scale_factor=2)),
    ((2, 3, 3, 4, 5), dict(size=(2, 7, 4))),
    ((2, 3, 7), dict(scale_factor=2.3, mode="linear")),
    ((2, 3, 7), dict(size=4, mode="linear", align_corners=True)),
    ((2, 3, 5, 4), dict(scale_factor=2, mode="bilinear")),
    ((2, 3, 5, 4), dict(scale_factor=2, mode="bilinear", align_corners=True)),
    ((2, 3, 5, 4), dict(size=(3, 9), mode="bilinear")),
    ((2, 3, 5, 4), dict(size=(1, 1), mode="bilinear", align_corners=True)),
    ((2, 3, 5, 4), dict(scale_factor=(0.5, 1.75), mode="bilinear")),
    ((2, 3, 5, 4), dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True)),
    ((2, 3, 5, 4), dict(scale_factor=2, mode="bicubic")),
    ((2, 3, 5, 4), dict(size=(3, 9), mode="bicubic", align_corners=True)),
    ((2, 3, 6, 6), dict(size=(13, 4), mode="bicubic")),
    ((2, 3, 3, 4, 5), dict(scale_factor=1.5, mode="trilinear")),
    ((2, 3, 3, 4, 5), dict(size=(5, 2, 6), mode="trilinear", align_corners=True)),
    ((2, 3, 9, 7), dict(size=(4, 3), mode="area")),
    ((2, 3, 9), dict(scale_factor=0.5, mode="area")),
]


@pytest.mark.parametrize("shape, kwargs", CASES, ids=str)
def test_interpolate_matches_torch(shape, kwargs, close, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    want = TF.interpolate(torch.from_numpy(x), **kwargs)
    y = F.interpolate(jnp.asarray(x), **kwargs)
    assert y.shape == tuple(want.shape) and y.dtype == jnp.float32
    close(y, want)


def test_nearest_interpolation_copies_values_exactly(rng):
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    x[0, 0, 1, 1] = np.inf
    y = F.interpolate(jnp.asarray(x), scale_factor=(2.2, 0.8))
    want = TF.interpolate(torch.from_numpy(x), scale_factor=(2.2, 0.8)).numpy()
    np.testing.assert_array_equal(np.asarray(y), want)


def test_interpolate_errors():
    x = jnp.ones((1, 2, 4, 4))
    with pytest.raises(ValueError, match="give exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="give exactly one of size and scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        F.interpolate(x, size=3, mode="cubic")
    with pytest.raises(ValueError, match=r"mode 'linear' needs 1 spatial dims \(3-d input\)"):
        F.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match="align_corners can only be set with the interpolating modes"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ValueError, match="antialias=True is not supported"):
        F.interpolate(x, size=3, mode="bilinear", antialias=True)
    with pytest.raises(ValueError, match=r"needs 2 values of size, got \(3, 3, 3\)"):
        F.interpolate(x, size=(3, 3, 3))
    with pytest.raises(ValueError, match="recompute_scale_factor is not meaningful with an explicit size"):
        F.interpolate(x, size=3, recompute_scale_factor=True)


@pytest.mark.parametrize("shape, r", [((2, 12, 3, 4), 2), ((18, 2, 3), 3), ((2, 1, 4, 2, 2), 2)])
def test_pixel_shuffle_and_unshuffle_match_torch_and_invert_each_other(shape, r, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.pixel_shuffle(jnp.asarray(x), r)
    np.testing.assert_array_equal(np.asarray(y), TF.pixel_shuffle(torch.from_numpy(x), r).numpy())
    back = F.pixel_unshuffle(y, r)
    np.testing.assert_array_equal(np.asarray(back), x)
    np.testing.assert_array_equal(
        np.asarray(back), TF.pixel_unshuffle(torch.from_numpy(np.array(y)), r).numpy()
    )
    with pytest.raises(ValueError, match=r"pixel_shuffle: expected input \(\*, C\*r\*r, H, W\)"):
        F.pixel_shuffle(jnp.ones((2, 5, 3, 3)), 2)
    with pytest.raises(ValueError, match=r"pixel_unshuffle: expected input \(\*, C, H\*r, W\*r\)"):
        F.pixel_unshuffle(jnp.ones((2, 5, 3, 3)), 2)


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 4), 3), ((2, 8, 5), 2), ((1, 4, 2, 2, 2), 4)])
def test_channel_shuffle_matches_torch(shape, groups, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    want = torch.nn.ChannelShuffle(groups)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.asarray(F.channel_shuffle(jnp.asarray(x), groups)), want)
    with pytest.raises(ValueError, match="C divisible by groups = 5"):
        F.channel_shuffle(jnp.asarray(x), 5)
