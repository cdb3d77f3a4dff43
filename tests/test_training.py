"""End to end: a jit-compiled optax training step over jaxnets layers, and optax state files."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import nn


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def _problem() -> tuple[jax.Array, jax.Array]:
    """Two classes of 8x8 images: a bright blob top-left or bottom-right, plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=64)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32) * 0.5
    for i, c in enumerate(y):
        sl = slice(0, 4) if c == 0 else slice(4, 8)
        x[i, 0, sl, sl] += 1.5
    return jnp.asarray(x), jnp.asarray(y)


def _train(model, params, state, opt, x, y, steps):
    opt_state = opt.init(params)

    def loss_fn(p, s, k):
        logits, s = model.apply(p, s, x, train=True, key=k)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), s

    @jax.jit
    def step(p, s, o, k):
        (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, k)
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), s, o, loss

    losses = []
    for i in range(steps):
        params, state, opt_state, loss = step(params, state, opt_state, jax.random.key(i))
        losses.append(float(loss))
    return params, state, opt_state, losses


@pytest.mark.slow
def test_jit_train_step_decreases_loss_and_threads_batchnorm_state():
    model = _cnn()
    params, state = model.init(jax.random.key(0))
    x, y = _problem()
    params, state, _, losses = _train(model, params, state, optax.adam(1e-2), x, y, 40)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert int(state["1"]["num_batches_tracked"]) == 40
    assert not np.allclose(np.asarray(state["1"]["running_mean"]), 0)
    logits, _ = model.apply(params, state, x)  # eval mode: running stats, no dropout
    assert float(jnp.mean(jnp.argmax(logits, -1) == y)) > 0.9


@pytest.mark.slow
def test_optax_state_flattens_and_comes_back_as_namedtuples():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 4))
    y = jnp.arange(16) % 2
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    params, state, opt_state, _ = _train(model, params, state, opt, x, y, 3)

    flat = jaxnets.state_dict(opt_state)
    assert "1.0.count" in flat and "1.0.mu.0.weight" in flat and flat["1.0.mu.2.bias"].shape == (2,)
    template = opt.init(params)
    restored = jaxnets.load_state_dict(template, flat)
    assert jax.tree.structure(restored) == jax.tree.structure(opt_state)
    assert type(restored[1][0]) is type(opt_state[1][0]) is optax.ScaleByAdamState
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(opt_state)):
        np.testing.assert_array_equal(a, b)
    # the restored state continues training exactly as the original
    g = jax.tree.map(jnp.ones_like, params)
    u1, _ = opt.update(g, opt_state, params)
    u2, _ = opt.update(g, restored, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        np.testing.assert_array_equal(a, b)
