"""BatchNorm1d/2d/3d and InstanceNorm1d/2d/3d against torch.nn: outputs and running statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def _perturbed(layer, seed=0):
    """Params/state with non-trivial values, so a wrong use of weight or bias would show."""
    params, state = layer.init(jax.random.key(seed))
    k = jax.random.key(seed + 100)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(k, p.shape), params)
    return params, state


BN_CASES = [
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 4), {}),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (6, 4, 5), dict(momentum=0.3)),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 4, 5, 3), {}),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 4, 3, 3), dict(momentum=None, eps=1e-3)),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 4, 3, 3), dict(affine=False)),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (5, 4, 2), dict(track_running_stats=False)),
    (nn.BatchNorm3d, torch.nn.BatchNorm3d, (3, 4, 2, 3, 2), {}),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 4, 3, 3), dict(bias=False)),
]


@pytest.mark.parametrize("jcls, tcls, shape, kwargs", BN_CASES, ids=lambda v: str(v))
def test_batchnorm_matches_torch_over_train_steps_and_eval(
    jcls, tcls, shape, kwargs, to_torch, close, rng
):
    layer = jcls(4, **kwargs)
    params, state = _perturbed(layer)
    t = to_torch(layer, params, state, tcls(4, **kwargs))
    step = jax.jit(lambda p, s, x: layer.apply(p, s, x, train=True))
    t.train()
    for i in range(4):
        x = (rng.standard_normal(shape) * (1 + i) + i).astype(np.float32)
        y, state = step(params, state, jnp.asarray(x))
        close(y, t(torch.from_numpy(x)))
    got = jaxnets.state_dict(params, state, model=layer)
    want = t.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        if k == "num_batches_tracked":
            assert int(got[k]) == int(v) == 4
        else:
            close(got[k], v)
    t.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    y, eval_state = layer.apply(params, state, jnp.asarray(x), train=False)
    close(y, t(torch.from_numpy(x)))
    assert eval_state is state


def test_batchnorm_state_buffers_and_dtypes():
    params, state = nn.BatchNorm2d(3).init(jax.random.key(0))
    assert list(params) == ["weight", "bias"]
    assert list(state) == ["running_mean", "running_var", "num_batches_tracked"]
    assert (
        state["num_batches_tracked"].dtype == jnp.int32 and state["num_batches_tracked"].shape == ()
    )
    assert np.all(np.asarray(state["running_var"]) == 1) and np.all(
        np.asarray(params["weight"]) == 1
    )


def test_batchnorm_loads_torch_int64_counter():
    t = torch.nn.BatchNorm2d(3)
    t.train()
    t(torch.randn(4, 3, 2, 2))
    params, state = jaxnets.load_state_dict(nn.BatchNorm2d(3), t.state_dict())
    assert (
        int(state["num_batches_tracked"]) == 1 and state["num_batches_tracked"].dtype == jnp.int32
    )


def test_batchnorm_errors():
    layer = nn.BatchNorm1d(3)
    params, state = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.apply(params, state, jnp.ones((1, 3)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected input \(N, C\) or \(N, C, L\)"):
        layer.apply(params, state, jnp.ones((2, 3, 4, 5)))
    with pytest.raises(
        ValueError, match=r"BatchNorm1d: expected input \(N, C\) with C = num_features = 3 on axis 1.*got shape \(2, 4\) with 4 there"
    ):
        layer.apply(params, state, jnp.ones((2, 4)))


def test_batchnorm_grads_are_finite_and_state_is_not_differentiated():
    layer = nn.BatchNorm2d(2)
    params, state = layer.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 2, 3, 3))

    def loss(p):
        y, s = layer.apply(p, state, x, train=True)
        return jnp.sum(y * jnp.arange(y.size).reshape(y.shape)) + jnp.sum(s["running_mean"])

    g = jax.grad(loss)(params)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in g.values())


@pytest.mark.parametrize(
    "jax_layer, torch_layer",
    [
        (nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5)),
        (nn.BatchNorm2d(5, affine=False), torch.nn.BatchNorm2d(5, affine=False)),
        (nn.LayerNorm((3, 5)), torch.nn.LayerNorm((3, 5))),
        (nn.GroupNorm(5, 10), torch.nn.GroupNorm(5, 10)),
        (nn.BatchNorm3d(5, bias=False), torch.nn.BatchNorm3d(5, bias=False)),
        (nn.InstanceNorm2d(5, affine=True, track_running_stats=True), torch.nn.InstanceNorm2d(5, affine=True, track_running_stats=True)),
        (nn.InstanceNorm1d(5), torch.nn.InstanceNorm1d(5)),
        (nn.RMSNorm((3, 5)), torch.nn.RMSNorm((3, 5))),
        (nn.GroupNorm(5, 10, bias=False), torch.nn.GroupNorm(5, 10, bias=False)),
    ],
    ids=["bn1d", "bn2d-noaffine", "layernorm", "groupnorm", "bn3d-nobias", "in2d", "in1d", "rms", "gn-nobias"],
)
def test_default_init_equals_torch(jax_layer, torch_layer):
    got = jaxnets.state_dict(*jax_layer.init(jax.random.key(0)), model=jax_layer)
    want = torch_layer.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v.numpy())


IN_CASES = [
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (3, 4, 7), {}),
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (4, 7), dict(affine=True)),  # unbatched
    (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (3, 4, 5, 6), dict(affine=True, track_running_stats=True)),
    (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (4, 5, 6), dict(track_running_stats=True, momentum=0.3)),
    (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (3, 4, 5, 6), dict(track_running_stats=True, momentum=None)),
    (nn.InstanceNorm3d, torch.nn.InstanceNorm3d, (2, 4, 3, 4, 5), dict(affine=True, bias=False, eps=1e-3)),
]


@pytest.mark.parametrize("jcls, tcls, shape, kwargs", IN_CASES, ids=lambda v: str(v))
def test_instancenorm_matches_torch_over_train_steps_and_eval(jcls, tcls, shape, kwargs, to_torch, close, rng):
    layer = jcls(4, **kwargs)
    params, state = _perturbed(layer)
    t = to_torch(layer, params, state, tcls(4, **kwargs))
    assert list(jaxnets.state_dict(params, state, model=layer)) == list(t.state_dict())
    t.train()
    for i in range(3):
        x = (rng.standard_normal(shape) * (1 + i) + i).astype(np.float32)
        y, state = layer.apply(params, state, jnp.asarray(x), train=True)
        close(y, t(torch.from_numpy(x)))
    for k, v in t.state_dict().items():
        close(jaxnets.state_dict(params, state, model=layer)[k], v)  # counter stays 0, as torch's
    t.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    y, eval_state = layer.apply(params, state, jnp.asarray(x), train=False)
    close(y, t(torch.from_numpy(x)))
    assert eval_state is state
    back, back_state = jaxnets.load_state_dict(layer, t.state_dict())
    close(layer.apply(back, back_state, jnp.asarray(x))[0], t(torch.from_numpy(x)))


def test_instancenorm_channel_mismatch_warns_like_torch_unless_it_has_per_channel_values():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5)), jnp.float32)
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"size at dim 1 \(3\) does not match num_features \(4\)"):
        y, _ = nn.InstanceNorm1d(4).apply({}, {}, x)
    with pytest.warns(UserWarning):
        want = torch.nn.InstanceNorm1d(4)(torch.from_numpy(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(y), want.numpy(), rtol=1e-5, atol=1e-5)
    layer = nn.InstanceNorm1d(4, affine=True)
    with pytest.raises(ValueError, match=r"InstanceNorm1d: expected input \(N, C, L\) with C = num_features = 4"):
        layer.apply(*layer.init(jax.random.key(0)), x)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm2d(3).apply({}, {}, jnp.ones((2, 3, 1, 1)), train=True)


def test_norm_rejects_bad_hyperparameters_and_shapes():
    with pytest.raises(ValueError, match="divisible by num_groups"):
        nn.GroupNorm(4, 6)
    layer = nn.LayerNorm(5)
    with pytest.raises(ValueError, match=r"LayerNorm: expected input \(\.\.\., 5\)"):
        layer.apply(*layer.init(jax.random.key(0)), jnp.ones((2, 4)))
