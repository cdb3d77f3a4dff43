"""A small training run shared by the checkpoint tests and their subprocess scripts."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxnets.nn import Linear, Sequential
from jaxnets.nn.activation import ReLU
from jaxnets.nn.dropout import Dropout
from jaxnets.nn.norm import BatchNorm1d

MODEL = Sequential(Linear(4, 16), BatchNorm1d(16), ReLU(), Dropout(0.3), Linear(16, 3))
OPT = optax.adam(1e-2)


def start() -> dict[str, Any]:
    params, state = MODEL.init(jax.random.key(0))
    return {
        "params": params,
        "state": state,
        "opt_state": OPT.init(params),
        "rng": jax.random.key(42),
    }


def batch(step: int) -> tuple[jax.Array, jax.Array]:
    k = jax.random.fold_in(jax.random.key(7), step)
    x = jax.random.normal(k, (32, 4))
    return x, (x[:, :3] * 2.0).astype(jnp.float32)


@partial(jax.jit, donate_argnums=())
def _step(params, state, opt_state, rng, x, y):
    rng, sub = jax.random.split(rng)

    def loss_fn(p):
        out, new_state = MODEL.apply(p, state, x, train=True, key=sub)
        return jnp.mean((out - y) ** 2), new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state, rng, loss


def train(ts: dict[str, Any], first: int, last: int) -> dict[str, Any]:
    """Runs steps ``first .. last-1`` from the training state ``ts``."""
    p, s, o, r = ts["params"], ts["state"], ts["opt_state"], ts["rng"]
    for i in range(first, last):
        p, s, o, r, _ = _step(p, s, o, r, *batch(i))
    return {"params": p, "state": s, "opt_state": o, "rng": r}
