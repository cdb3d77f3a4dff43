"""LayerNorm, GroupNorm, RMSNorm and LocalResponseNorm: normalisations without buffers, with
torch.nn's arguments and parameters (BatchNorm and InstanceNorm are in :mod:`.norm`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, check_channels, freeze
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm"]


class _LastDims(Module):
    """Shared by LayerNorm and RMSNorm: ``normalized_shape`` names the trailing dims of ``x``."""

    normalized_shape: int | tuple[int, ...]

    def __post_init__(self) -> None:
        freeze(self, "normalized_shape")

    @property
    def _shape(self) -> tuple[int, ...]:
        s = self.normalized_shape
        return (s,) if isinstance(s, int) else tuple(s)

    def _axes(self, x: Any) -> tuple[int, ...]:
        shape = self._shape
        k = len(shape)
        check(
            x.ndim >= k and tuple(x.shape[x.ndim - k :]) == shape,
            self,
            f"expected input (..., {', '.join(map(str, shape))}), got shape {x.shape}.",
        )
        return tuple(range(x.ndim - k, x.ndim))

    def _param(self, params: Params, name: str, x: Any) -> jax.Array:
        return params[name].reshape((1,) * (x.ndim - len(self._shape)) + self._shape)


@register(name="nn.LayerNorm")
class LayerNorm(_LastDims):
    """Normalises over the last ``len(normalized_shape)`` dims, as ``torch.nn.LayerNorm``.

    Args (torch's): ``normalized_shape`` (int or tuple), ``eps=1e-5``,
    ``elementwise_affine=True``, ``bias=True``.

    Params: ``weight normalized_shape`` = 1 and ``bias normalized_shape`` = 0 (when
    ``elementwise_affine``; ``bias`` also needs ``bias=True``).
    Shapes: ``x (..., *normalized_shape)`` -> same shape. Uses the biased variance, as torch.

    Raises:
      ValueError: the trailing dims of ``x`` are not ``normalized_shape``.
    """

    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        params: Params = {}
        if self.elementwise_affine:
            params["weight"] = jnp.ones(self._shape, jnp.float32)
            if self.bias:
                params["bias"] = jnp.zeros(self._shape, jnp.float32)
        return params, {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        axes = self._axes(x)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        xc = x - mean
        var = jnp.mean(jnp.square(xc), axis=axes, keepdims=True)
        y = xc * jax.lax.rsqrt(var + self.eps)
        if self.elementwise_affine:
            y = y * self._param(params, "weight", x)
            if self.bias:
                y = y + self._param(params, "bias", x)
        return y, state


@register(name="nn.RMSNorm")
class RMSNorm(_LastDims):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dims, as ``torch.nn.RMSNorm`` (2.4+).

    Args (torch's): ``normalized_shape`` (int or tuple), ``eps=None`` (``None``: the machine
    epsilon of the input's dtype, ``finfo(x.dtype).eps``, as torch), ``elementwise_affine=True``.

    Params (when ``elementwise_affine``): ``weight normalized_shape`` = 1; no bias.
    Shapes: ``x (..., *normalized_shape)`` -> same shape.

    Raises:
      ValueError: the trailing dims of ``x`` are not ``normalized_shape``.
    """

    eps: float | None = None
    elementwise_affine: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        if not self.elementwise_affine:
            return {}, {}
        return {"weight": jnp.ones(self._shape, jnp.float32)}, {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        axes = self._axes(x)
        eps = float(jnp.finfo(x.dtype).eps) if self.eps is None else self.eps
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + eps)
        if self.elementwise_affine:
            y = y * self._param(params, "weight", x)
        return y, state


@register(name="nn.GroupNorm")
class GroupNorm(Module):
    """Normalises each of ``num_groups`` channel groups per sample, as ``torch.nn.GroupNorm``.

    Args (torch's): ``num_groups``, ``num_channels``, ``eps=1e-5``, ``affine=True``, keyword
    ``bias=True`` (torch 2.13's).
    Params (when ``affine``): ``weight (C,)`` = 1, ``bias (C,)`` = 0 (when ``bias``).
    Shapes: ``x (N, C, *)`` -> same shape.

    Raises:
      ValueError: ``num_channels`` not divisible by ``num_groups``, or a wrong channel count.
    """

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True

    def __post_init__(self) -> None:
        check(
            self.num_groups >= 1 and self.num_channels % self.num_groups == 0,
            self,
            f"num_channels ({self.num_channels}) must be divisible by num_groups ({self.num_groups}).",
        )

    def init(self, key: jax.Array) -> tuple[Params, State]:
        c = self.num_channels
        params: Params = {}
        if self.affine:
            params["weight"] = jnp.ones((c,), jnp.float32)
            if self.bias:
                params["bias"] = jnp.zeros((c,), jnp.float32)
        return params, {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        check(x.ndim >= 2, self, f"expected input (N, C, *), got shape {x.shape}.")
        layout = "(N, C" + ", *" * (x.ndim - 2) + ")"
        check_channels(self, x, self.num_channels, "num_channels", layout)
        g = x.reshape(x.shape[0], self.num_groups, -1)
        mean = jnp.mean(g, axis=2, keepdims=True)
        gc = g - mean
        var = jnp.mean(jnp.square(gc), axis=2, keepdims=True)
        y = (gc * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            cshape = (1, self.num_channels) + (1,) * (x.ndim - 2)
            y = y * params["weight"].reshape(cshape)
            if self.bias:
                y = y + params["bias"].reshape(cshape)
        return y, state


@register(name="nn.LocalResponseNorm")
class LocalResponseNorm(Module):
    """``x / (k + alpha/size * sum of x^2 over a window of size channels)^beta``, as
    ``torch.nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)`` (AlexNet).

    The window around channel ``c`` is ``[c - size//2, c + (size-1)//2]``, zero-padded at the
    ends, and the divisor is always ``size``, as torch. No params.
    Shapes: ``x (N, C, *)`` with at least one spatial dim -> same shape.

    Raises:
      ValueError: the input has fewer than 3 dims.
    """

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        check(x.ndim >= 3, self, f"expected input (N, C, *) with 3 or more dims, got shape {x.shape}.")
        window = (1, self.size) + (1,) * (x.ndim - 2)
        pads = [(0, 0), (self.size // 2, (self.size - 1) // 2)] + [(0, 0)] * (x.ndim - 2)
        total = jax.lax.reduce_window(
            jnp.square(x), np.array(0, x.dtype), jax.lax.add, window, (1,) * x.ndim, pads
        )
        div = jnp.power(total * (self.alpha / self.size) + self.k, self.beta)
        return x / div, state
