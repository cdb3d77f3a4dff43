"""Activations along one dim, with torch.nn's names and arguments: Softmax, LogSoftmax, Softmin,
Softmax2d and GLU. No params or state.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.errors import JaxnetsWarning
from jaxnets.nn._utils import check
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["Softmax", "LogSoftmax", "Softmin", "Softmax2d", "GLU"]


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


class _AlongDim(Module):
    dim: int | None = None

    def fn(self, x: jax.Array, axis: int) -> jax.Array:
        raise NotImplementedError

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        x = jnp.asarray(x)
        return self.fn(x, _softmax_dim(self, self.dim, x.ndim)), state


@register(name="nn.Softmax")
class Softmax(_AlongDim):
    """Softmax along ``dim``, as ``torch.nn.Softmax(dim)``. Shapes: any -> same.

    ``dim=None`` (torch's default) follows torch's deprecated rule (0 for 0-, 1- and 3-d inputs,
    else 1) and warns; pass ``dim`` explicitly.
    """

    def fn(self, x: jax.Array, axis: int) -> jax.Array:
        return jax.nn.softmax(x, axis=axis)


@register(name="nn.LogSoftmax")
class LogSoftmax(_AlongDim):
    """``log(softmax(x))`` along ``dim``, computed stably, as ``torch.nn.LogSoftmax(dim)``.

    Shapes: any -> same. ``dim=None`` behaves as in :class:`Softmax` (torch's rule, warns).
    """

    def fn(self, x: jax.Array, axis: int) -> jax.Array:
        return jax.nn.log_softmax(x, axis=axis)


@register(name="nn.Softmin")
class Softmin(_AlongDim):
    """``softmax(-x)`` along ``dim``, as ``torch.nn.Softmin(dim)``. Shapes: any -> same."""

    def fn(self, x: jax.Array, axis: int) -> jax.Array:
        return jax.nn.softmax(-x, axis=axis)


@register(name="nn.Softmax2d")
class Softmax2d(Module):
    """Softmax over the channels of ``(N, C, H, W)`` or ``(C, H, W)`` (dim -3), as
    ``torch.nn.Softmax2d``. Shapes: same.

    Raises:
      ValueError: the input is not 3-d or 4-d.
    """

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        check(x.ndim in (3, 4), self, f"expected input (N, C, H, W) or (C, H, W), got shape {x.shape}.")
        return jax.nn.softmax(x, axis=-3), state


@register(name="nn.GLU")
class GLU(Module):
    """Gated linear unit ``a * sigmoid(b)`` for the two halves ``a, b`` of ``dim``, as
    ``torch.nn.GLU(dim=-1)``. Shapes: ``(..., 2M, ...)`` -> ``(..., M, ...)`` along ``dim``.

    Raises:
      ValueError: the size of ``dim`` is odd.
    """

    dim: int = -1

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        check(
            x.shape[self.dim] % 2 == 0,
            self,
            f"halving only works on an even dim; dim {self.dim} of shape {x.shape} is odd.",
        )
        a, b = jnp.split(x, 2, axis=self.dim)
        return a * jax.nn.sigmoid(b), state
