"""Shared helpers: run a jaxnets.optim optimizer and its optax twin side by side."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def make_params() -> dict[str, Any]:
    """A small tree with a matrix (factored by adafactor when min_dim_size_to_factor <= 3)."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {
        "fc": {"weight": jax.random.normal(k1, (4, 3)), "bias": jax.random.normal(k2, (4,))},
        "scale": jax.random.normal(k3, ()),
    }


def grads_at(params: Any, step: int) -> Any:
    """Deterministic, step-dependent gradients, some large enough to trigger clipping."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(1), step), len(leaves))
    g = [3.0 * jax.random.normal(k, x.shape, x.dtype) + 0.1 * x for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, g)


def run(tx: Any, steps: int = 5, *, jit: bool = False) -> list[tuple[Any, Any]]:
    """``[(updates, state), ...]`` after each of ``steps`` updates, params applied in between."""
    params = make_params()
    state = tx.init(params)
    update: Callable[..., Any] = jax.jit(tx.update) if jit else tx.update
    out = []
    for i in range(steps):
        updates, state = update(grads_at(params, i), state, params)
        params = optax.apply_updates(params, updates)
        out.append((updates, state))
    return out


def assert_trees_identical(a: Any, b: Any) -> None:
    """Same structure (NamedTuple types included), same dtypes, bit-for-bit equal leaves."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same_run(ours: Any, theirs: Any, steps: int = 5, *, jit: bool = False) -> None:
    for (u1, s1), (u2, s2) in zip(
        run(ours, steps, jit=jit), run(theirs, steps, jit=jit), strict=True
    ):
        assert_trees_identical(u1, u2)
        assert_trees_identical(s1, s2)


@pytest.fixture
def helpers() -> SimpleNamespace:
    return SimpleNamespace(
        make_params=make_params,
        grads_at=grads_at,
        run=run,
        assert_trees_identical=assert_trees_identical,
        assert_same_run=assert_same_run,
    )
