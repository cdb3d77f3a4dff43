"""Linear, Identity and Flatten: torch.nn's names, arguments and parameter layouts."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn.module import Module, Params, State

__all__ = ["Linear", "Identity", "Flatten"]


@register(name="nn.Linear")
class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Params: ``weight (out_features, in_features)``, ``bias (out_features,)`` when ``bias``.
    Shapes: ``x (..., in_features)`` -> ``y (..., out_features)``.
    """

    in_features: int
    out_features: int
    bias: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        shape = (self.out_features, self.in_features)
        return initializers.weight_and_bias(key, shape, self.out_features, bias=self.bias), {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        y = jnp.matmul(x, params["weight"].T)
        if self.bias:  # explicit rank: works under jax_numpy_rank_promotion="raise"
            y = y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,))
        return y, state


@register(name="nn.Identity")
class Identity(Module):
    """Returns its input unchanged. No params."""


    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[Any, State]:
        return x, state


@register(name="nn.Flatten")
class Flatten(Module):
    """Flattens dims ``start_dim..end_dim`` into one, as ``torch.nn.Flatten`` (default ``1..-1``).

    Shapes: ``(N, C, H, W)`` -> ``(N, C*H*W)``.
    """

    start_dim: int = 1
    end_dim: int = -1


    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
        return jnp.reshape(x, shape), state
