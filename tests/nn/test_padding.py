"""Padding layers against torch.nn (every mode, 1d/2d/3d, batched and unbatched)."""

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
    ("ZeroPad1d", 2, (2, 3, 5)),
    ("ZeroPad2d", (1, 2, 0, 3), (2, 3, 4, 5)),
    ("ZeroPad3d", 1, (3, 2, 3, 4)),
    ("ReflectionPad1d", (2, 1), (3, 5)),
    ("ReflectionPad2d", (1, 2, 3, 0), (2, 3, 4, 5)),
    ("ReflectionPad3d", 1, (1, 2, 2, 3, 4)),
    ("ReplicationPad1d", (0, 7), (2, 3, 5)),
    ("ReplicationPad2d", 2, (3, 4, 5)),
    ("ReplicationPad3d", (1, 0, 2, 1, 0, 3), (1, 2, 2, 3, 4)),
    ("CircularPad1d", (2, 5), (2, 3, 5)),
    ("CircularPad2d", (1, 2, 3, 0), (2, 3, 4, 5)),
    ("CircularPad3d", 1, (1, 2, 2, 3, 4)),
]


@pytest.mark.parametrize("name, padding, shape", CASES, ids=str)
def test_matches_torch_and_round_trips_its_config(name, padding, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    layer = getattr(nn, name)(padding)
    want = getattr(torch.nn, name)(padding)(torch.from_numpy(x)).numpy()
    for train in (False, True):
        y, state = layer.apply({}, {}, jnp.asarray(x), train=train)
        np.testing.assert_array_equal(np.asarray(y), want)
    assert layer.init(jax.random.key(0)) == ({}, {})
    assert jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(layer)))) == layer


@pytest.mark.parametrize(
    "name, padding, value, shape",
    [("ConstantPad1d", (2, 1), 3.5, (2, 3, 4)), ("ConstantPad2d", (-1, 2, 1, -2), -1.0, (2, 3, 4, 5)),
     ("ConstantPad3d", 1, 0.5, (2, 1, 2, 3, 2))],
    ids=str,
)  # fmt: skip
def test_constant_pad_matches_torch_including_negative_crops(name, padding, value, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y, _ = getattr(nn, name)(padding, value).apply({}, {}, jnp.asarray(x))
    want = getattr(torch.nn, name)(padding, value)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.asarray(y), want)


def test_padding_errors():
    with pytest.raises(ValueError, match=r"ReflectionPad1d: padding \(5, 5\) must be non-negative and smaller than the input sizes \(5,\)"):
        nn.ReflectionPad1d(5).apply({}, {}, jnp.ones((1, 2, 5)))
    with pytest.raises(ValueError, match=r"ZeroPad2d: expected a 3-d or 4-d input"):
        nn.ZeroPad2d(1).apply({}, {}, jnp.ones((5,)))
    with pytest.raises(TypeError, match=r"ZeroPad2d: padding must be an int or a tuple of 4 ints"):
        nn.ZeroPad2d((1, 2))
