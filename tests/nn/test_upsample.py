"""Upsample, UpsamplingNearest2d/Bilinear2d, PixelShuffle and PixelUnshuffle against torch.nn."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn

CASES = [
    (nn.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2), (2, 3, 4, 5)),
    (nn.Upsample(size=(7, 3)), torch.nn.Upsample(size=(7, 3)), (2, 3, 4, 5)),
    (
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        (2, 3, 4, 5),
    ),
    (
        nn.Upsample(scale_factor=(1.5, 2.5), mode="bilinear"),
        torch.nn.Upsample(scale_factor=(1.5, 2.5), mode="bilinear"),
        (2, 3, 4, 5),
    ),
    (nn.Upsample(scale_factor=3, mode="linear"), torch.nn.Upsample(scale_factor=3, mode="linear"), (2, 3, 5)),
    (nn.Upsample(size=(3, 4, 5), mode="trilinear"), torch.nn.Upsample(size=(3, 4, 5), mode="trilinear"), (1, 2, 2, 3, 2)),
    (nn.Upsample(scale_factor=2, mode="bicubic"), torch.nn.Upsample(scale_factor=2, mode="bicubic"), (2, 3, 4, 5)),
    (nn.UpsamplingNearest2d(scale_factor=2), torch.nn.UpsamplingNearest2d(scale_factor=2), (2, 3, 4, 5)),
    (nn.UpsamplingBilinear2d(size=(6, 9)), torch.nn.UpsamplingBilinear2d(size=(6, 9)), (2, 3, 4, 5)),
    (nn.PixelShuffle(2), torch.nn.PixelShuffle(2), (2, 8, 3, 4)),
    (nn.PixelUnshuffle(2), torch.nn.PixelUnshuffle(2), (2, 3, 4, 6)),
    (nn.ChannelShuffle(3), torch.nn.ChannelShuffle(3), (2, 6, 4, 5)),
]


@pytest.mark.parametrize("layer, t, shape", CASES, ids=lambda v: repr(v)[:60])
def test_matches_torch_in_train_and_eval_and_round_trips_its_config(layer, t, shape, close, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    assert layer.init(jax.random.key(0)) == ({}, {})
    for train in (False, True):
        t.train(train)
        y, state = layer.apply({}, {}, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))
        assert state == {}
    rebuilt = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(layer))))
    assert rebuilt == layer and type(rebuilt) is type(layer) and hash(rebuilt) == hash(layer)


def test_upsampling_bilinear2d_aligns_corners_as_torch_does():
    layer = nn.UpsamplingBilinear2d(scale_factor=2)
    assert layer.mode == "bilinear" and layer.align_corners is True
    assert jaxnets.to_config(layer)["config"] == {"size": None, "scale_factor": 2}


def test_upsample_rejects_bad_arguments_at_construction():
    with pytest.raises(ValueError, match="Upsample: mode must be one of"):
        nn.Upsample(scale_factor=2, mode="lanczos")
    with pytest.raises(ValueError, match="Upsample: align_corners can only be set with the interpolating modes"):
        nn.Upsample(scale_factor=2, align_corners=False)
    with pytest.raises(ValueError, match="Upsample: give exactly one of size and scale_factor"):
        nn.Upsample()
    assert nn.Upsample(size=[3, 4]) == nn.Upsample(size=(3, 4))  # lists become tuples
