"""A user's module: a custom layer, a model using it and a preprocessor, all registered."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets
from jaxnets import nn


@jaxnets.register(name="tests.Scale")
@dataclass(frozen=True)
class Scale(nn.Module):
    """y = x * gain (a learned per-feature gain)."""

    features: int

    def init(self, key):
        return {"gain": jnp.ones((self.features,), jnp.float32)}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        return x * params["gain"], state


@jaxnets.register(name="tests.Net")
@dataclass(frozen=True)
class Net(nn.Module):
    fc1: nn.Linear = nn.Linear(6, 16)
    scale: Scale = Scale(16)
    fc2: nn.Linear = nn.Linear(16, 3)

    def apply(self, params, state, x, *, train=False, key=None):
        m = self.bind(params, state, train=train, key=key)
        return m.fc2(jax.nn.relu(m.scale(m.fc1(x)))), m.state


@jaxnets.register(name="tests.Standardize")
@dataclass(frozen=True)
class Standardize:
    mean: np.ndarray
    std: np.ndarray

    def __eq__(self, other):
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)

    __hash__ = None
