"""PyTorch's default initialisers, so fresh jaxnets layers match fresh torch layers in distribution.

Each function takes a PRNG key, a shape and a dtype and returns an array; fans follow
``torch.nn.init._calculate_fan_in_and_fan_out`` (dim 1 is fan-in, dim 0 fan-out, times the
receptive field).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["fans", "uniform", "torch_default", "weight_and_bias", "xavier_uniform", "normal"]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``, as PyTorch computes them."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform(key: jax.Array, shape: Sequence[int], bound: float, dtype: str = "float32") -> jax.Array:
    """``U(-bound, bound)``."""
    return jax.random.uniform(key, tuple(shape), jnp.dtype(dtype), -bound, bound)


def torch_default(key: jax.Array, shape: Sequence[int], fan_in: int, dtype: str = "float32") -> jax.Array:
    """``kaiming_uniform_(a=sqrt(5))`` for weights and the matching bias init: ``U(±1/sqrt(fan_in))``."""
    return uniform(key, shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def weight_and_bias(
    key: jax.Array, weight_shape: Sequence[int], bias_size: int, *, bias: bool
) -> dict[str, jax.Array]:
    """``{"weight", "bias"}`` as PyTorch initialises Linear and conv layers: ``U(±1/sqrt(fan_in))``
    for both, with ``fan_in`` computed from ``weight_shape`` (dim 1 times the receptive field)."""
    fan_in = fans(weight_shape)[0]
    kw, kb = jax.random.split(key)
    params = {"weight": torch_default(kw, weight_shape, fan_in)}
    if bias:
        params["bias"] = torch_default(kb, (bias_size,), fan_in)
    return params


def xavier_uniform(key: jax.Array, shape: Sequence[int], dtype: str = "float32") -> jax.Array:
    """``torch.nn.init.xavier_uniform_`` with gain 1."""
    fan_in, fan_out = fans(shape)
    return uniform(key, shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def normal(key: jax.Array, shape: Sequence[int], std: float = 1.0, dtype: str = "float32") -> jax.Array:
    """``N(0, std^2)``."""
    return std * jax.random.normal(key, tuple(shape), jnp.dtype(dtype))
