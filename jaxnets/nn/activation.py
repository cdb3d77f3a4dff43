"""Activation layers with torch.nn's names and arguments: ReLU, GELU, SiLU, Tanh, Sigmoid,
Softmax, LogSoftmax. None has params or state; all keep the input's shape.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.errors import JaxnetsWarning
from jaxnets.nn._utils import check
from jaxnets.nn.module import Module, Params, State

__all__ = ["ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax"]


class _Elementwise(Module):

    def fn(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        return self.fn(x), state


@register(name="nn.ReLU")
class ReLU(_Elementwise):
    """``max(x, 0)``, as ``torch.nn.ReLU``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


@register(name="nn.GELU")
class GELU(_Elementwise):
    """``x * Phi(x)``, as ``torch.nn.GELU(approximate="none")``; ``"tanh"`` is the tanh
    approximation. Shapes: any -> same.

    Raises:
      ValueError: ``approximate`` is not ``"none"`` or ``"tanh"``.
    """

    approximate: str = "none"

    def __post_init__(self) -> None:
        check(
            self.approximate in ("none", "tanh"),
            self,
            f"approximate must be 'none' or 'tanh', got {self.approximate!r}.",
        )

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


@register(name="nn.SiLU")
class SiLU(_Elementwise):
    """``x * sigmoid(x)``, as ``torch.nn.SiLU``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.silu(x)


@register(name="nn.Tanh")
class Tanh(_Elementwise):
    """``tanh(x)``, as ``torch.nn.Tanh``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x)


@register(name="nn.Sigmoid")
class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, as ``torch.nn.Sigmoid``. Shapes: any -> same."""

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x)


def _softmax_dim(layer: Module, dim: int | None, ndim: int) -> int:
    """torch's rule: ``dim=None`` (deprecated there too) means 0 for 0/1/3-d inputs, else 1."""
    if dim is not None:
        check(
            -max(ndim, 1) <= dim < max(ndim, 1),
            layer,
            f"dim {dim} is out of range for an input with {ndim} dims.",
        )
        return dim
    warnings.warn(
        f"{type(layer).__name__}(dim=None) picks the dim from the input's rank as PyTorch's "
        "deprecated implicit-dim rule does; pass dim= explicitly (usually dim=-1).",
        JaxnetsWarning,
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


@register(name="nn.Softmax")
class Softmax(_Elementwise):
    """Softmax along ``dim``, as ``torch.nn.Softmax(dim)``. Shapes: any -> same.

    ``dim=None`` (torch's default) follows torch's deprecated rule (0 for 0-, 1- and 3-d inputs,
    else 1) and warns; pass ``dim`` explicitly.
    """

    dim: int | None = None

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(x, axis=_softmax_dim(self, self.dim, x.ndim))


@register(name="nn.LogSoftmax")
class LogSoftmax(_Elementwise):
    """``log(softmax(x))`` along ``dim``, computed stably, as ``torch.nn.LogSoftmax(dim)``.

    Shapes: any -> same. ``dim=None`` behaves as in :class:`Softmax` (torch's rule, warns).
    """

    dim: int | None = None

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(x, axis=_softmax_dim(self, self.dim, x.ndim))
