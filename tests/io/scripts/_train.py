"""One training step shared by the save and load scripts; knows nothing about any model class."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)


def step(model, opt, params, state, opt_state, x, y):
    def loss(p):
        yhat, new_state = model.apply(p, state, x, train=True)
        return jnp.mean((yhat - y) ** 2), new_state

    (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state


def outputs(model, opt, params, state, opt_state) -> dict[str, np.ndarray]:
    """Predictions now, and every entry after ONE more optimizer step."""
    import jaxnets

    x, y = data()
    out = {"pred": np.asarray(model.apply(params, state, x)[0])}
    p2, s2, o2 = step(model, opt, params, state, opt_state, x, y)
    out.update({"sd." + k: np.asarray(v) for k, v in jaxnets.state_dict(p2, s2).items()})
    out.update({"opt." + k: np.asarray(v) for k, v in jaxnets.flatten(o2).items()})
    return out
