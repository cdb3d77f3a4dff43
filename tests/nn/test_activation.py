"""Activation layers against torch.nn with the same inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
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
    (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=False)),
    (nn.ReLU6(), torch.nn.ReLU6()),
    (nn.LeakyReLU(), torch.nn.LeakyReLU()),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.ELU(), torch.nn.ELU()),
    (nn.ELU(alpha=0.5), torch.nn.ELU(alpha=0.5)),
    (nn.CELU(alpha=2.0), torch.nn.CELU(alpha=2.0)),
    (nn.SELU(), torch.nn.SELU()),
    (nn.Mish(), torch.nn.Mish()),
    (nn.Hardswish(), torch.nn.Hardswish()),
    (nn.Hardsigmoid(), torch.nn.Hardsigmoid()),
    (nn.Hardtanh(), torch.nn.Hardtanh()),
    (nn.Hardtanh(-2.0, 3.0), torch.nn.Hardtanh(-2.0, 3.0)),
    (nn.LogSigmoid(), torch.nn.LogSigmoid()),
    (nn.Softplus(), torch.nn.Softplus()),
    (nn.Softplus(beta=2.0, threshold=5.0), torch.nn.Softplus(beta=2.0, threshold=5.0)),
    (nn.Softsign(), torch.nn.Softsign()),
    (nn.Tanhshrink(), torch.nn.Tanhshrink()),
    (nn.Softshrink(), torch.nn.Softshrink()),
    (nn.Hardshrink(1.0), torch.nn.Hardshrink(1.0)),
    (nn.Threshold(0.1, 20.0), torch.nn.Threshold(0.1, 20.0)),
    (nn.Softmin(dim=1), torch.nn.Softmin(dim=1)),
    (nn.Softmax2d(), torch.nn.Softmax2d()),
    (nn.GLU(), torch.nn.GLU()),
    (nn.GLU(dim=0), torch.nn.GLU(dim=0)),
]


@pytest.mark.parametrize("jax_layer, torch_layer", CASES, ids=lambda v: repr(v))
def test_matches_torch_with_same_shape(jax_layer, torch_layer, close, rng):
    x = (rng.standard_normal((4, 4, 6)) * 4).astype(np.float32)
    x[0, 0, :3] = [0.0, -3.0, 3.0]  # the kinks of the hard functions
    assert jax_layer.init(jax.random.key(0)) == ({}, {})
    want = torch_layer(torch.from_numpy(x))
    for train in (False, True):
        y, state = jax_layer.apply({}, {}, jnp.asarray(x), train=train)
        assert y.shape == tuple(want.shape) and state == {}
        close(y, want)


@pytest.mark.parametrize("ndim, torch_dim", [(1, 0), (2, 1), (3, 0), (4, 1)])
def test_softmax_dim_none_follows_torch_rule_and_warns(ndim, torch_dim, close, rng):
    x = rng.standard_normal((2, 3, 4, 5)[:ndim]).astype(np.float32)
    with pytest.warns(JaxnetsWarning, match="pass dim= explicitly"):
        y, _ = nn.Softmax().apply({}, {}, jnp.asarray(x))
    close(y, torch.softmax(torch.from_numpy(x), dim=torch_dim))


@pytest.mark.parametrize(
    "kwargs, shape", [({}, (3, 4, 5)), (dict(num_parameters=4), (3, 4, 5)), (dict(init=0.1), (5,)), (dict(num_parameters=5, init=0.1), (2, 5, 3, 2))]
)
def test_prelu_matches_torch_in_train_and_eval_and_loads_strictly(kwargs, shape, to_torch, close, rng):
    layer = nn.PReLU(**kwargs)
    params, state = layer.init(jax.random.key(0))
    t = torch.nn.PReLU(**kwargs)
    assert list(params) == list(t.state_dict()) == ["weight"]
    close(params["weight"], t.weight)  # the same init: filled with `init`
    params = {"weight": params["weight"] * jnp.linspace(0.5, 2.0, params["weight"].shape[0])}
    to_torch(layer, params, state, t)  # jaxnets -> torch, strict
    back, _ = jaxnets.load_state_dict(layer, t.state_dict())  # torch -> jaxnets, strict
    close(back["weight"], t.weight)
    x = rng.standard_normal(shape).astype(np.float32)
    for train in (False, True):
        t.train(train)
        y, _ = layer.apply(params, state, jnp.asarray(x), train=train)
        close(y, t(torch.from_numpy(x)))


def test_prelu_config_keeps_torchs_init_argument():
    layer = nn.PReLU(3, init=0.1)
    config = jaxnets.to_config(layer)
    assert config["config"] == {"num_parameters": 3, "init": 0.1}
    assert jaxnets.from_config(config) == layer
    with pytest.raises(ValueError, match=r"PReLU: expected 3 channels on axis 1"):
        layer.apply(*layer.init(jax.random.key(0)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"PReLU: expected 3 channels on axis 1"):
        layer.apply(*layer.init(jax.random.key(0)), jnp.ones((3,)))
    with pytest.raises(ValueError, match="num_parameters must be >= 1"):
        nn.PReLU(0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU(approximate="erf")
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        nn.Softmax(dim=2).apply({}, {}, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="max_val must be greater than min_val"):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(ValueError, match="GLU: halving only works on an even dim"):
        nn.GLU().apply({}, {}, jnp.ones((2, 3)))


def test_activations_vmap_and_grad():
    def loss(layer, x):
        y = layer.apply({}, {}, x)[0]
        return jnp.sum(y * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))

    for layer, _ in CASES:
        g = jax.vmap(jax.grad(lambda x, layer=layer: loss(layer, x)))(jnp.ones((2, 4, 4, 4)))
        assert g.shape == (2, 4, 4, 4) and bool(jnp.all(jnp.isfinite(g))), layer
