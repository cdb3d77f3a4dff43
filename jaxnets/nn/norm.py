"""BatchNorm1d/2d, LayerNorm and GroupNorm: torch.nn's arguments, parameters and buffers.

BatchNorm keeps PyTorch's buffers in ``state`` (``running_mean``, ``running_var``,
``num_batches_tracked``) and updates them in training exactly as torch does: the unbiased batch
variance goes into ``running_var``, ``momentum=None`` is a cumulative average.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, freeze
from jaxnets.nn.module import Module, Params, State

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"]


def _channel_shape(ndim: int, c: int) -> tuple[int, ...]:
    """``(1, C, 1, ...)``: a per-channel vector shaped to broadcast over NC* activations."""
    return (1, c) + (1,) * (ndim - 2)


class _BatchNorm(Module):
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True

    _ranks: ClassVar[tuple[int, ...]] = (4,)
    _shape_text: ClassVar[str] = "(N, C, H, W)"

    def init(self, key: jax.Array) -> tuple[Params, State]:
        c = self.num_features
        params: Params = {}
        if self.affine:
            params = {"weight": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
        state: State = {}
        if self.track_running_stats:
            state = {
                "running_mean": jnp.zeros((c,), jnp.float32),
                "running_var": jnp.ones((c,), jnp.float32),
                "num_batches_tracked": jnp.zeros((), jnp.int32),
            }
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        check(
            x.ndim in self._ranks and x.shape[1] == self.num_features,
            self,
            f"expected input {self._shape_text} with C = num_features = {self.num_features}, got shape {x.shape}.",
        )
        cshape = _channel_shape(x.ndim, self.num_features)
        axes = (0,) + tuple(range(2, x.ndim))
        use_batch = train or not self.track_running_stats
        new_state = state
        if use_batch:
            n = x.size // self.num_features
            check(
                n > 1,
                self,
                f"expected more than 1 value per channel when training, got input shape {x.shape}.",
            )
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean.reshape(cshape)), axis=axes)
            if train and self.track_running_stats:
                count = state["num_batches_tracked"] + 1
                if self.momentum is None:  # cumulative moving average, as torch
                    f = 1.0 / count.astype(mean.dtype)
                else:
                    f = jnp.asarray(self.momentum, mean.dtype)
                unbiased = var * (n / (n - 1))
                new_state = {
                    "running_mean": (1 - f) * state["running_mean"]
                    + f * jax.lax.stop_gradient(mean),
                    "running_var": (1 - f) * state["running_var"]
                    + f * jax.lax.stop_gradient(unbiased),
                    "num_batches_tracked": count,
                }
        else:
            mean, var = state["running_mean"], state["running_var"]
        # y = (x - mean) / sqrt(var + eps) * w + b, folded into one scale and shift per channel.
        scale = jax.lax.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * params["weight"]
        shift = -mean * scale
        if self.affine:
            shift = shift + params["bias"]
        return x * scale.reshape(cshape) + shift.reshape(cshape), new_state


_BN_DOC = """

    Args (torch's): ``num_features`` C; ``eps=1e-5``; ``momentum=0.1`` (``None``: cumulative
    average, factor ``1/num_batches_tracked``); ``affine=True``; ``track_running_stats=True``.

    Params (when ``affine``): ``weight (C,)`` = 1, ``bias (C,)`` = 0. State (when
    ``track_running_stats``): ``running_mean (C,)`` = 0, ``running_var (C,)`` = 1,
    ``num_batches_tracked ()`` int32 (torch: int64; loading casts).

    ``train=True`` normalises with the batch mean and biased variance and returns updated running
    stats (``running = (1 - m) * running + m * batch``, unbiased variance); ``train=False`` uses
    the running stats (batch stats when ``track_running_stats=False``). Stats are not
    differentiated through into ``state``.

    Raises:
      ValueError: the input has the wrong rank or channel count, or (training) one value per
        channel.
    """


@register(name="nn.BatchNorm1d")
class BatchNorm1d(_BatchNorm):
    __doc__ = (
        """Batch normalisation over ``x (N, C)`` or ``(N, C, L)`` -> same shape, as ``torch.nn.BatchNorm1d``."""
        + _BN_DOC
    )

    _ranks: ClassVar[tuple[int, ...]] = (2, 3)
    _shape_text: ClassVar[str] = "(N, C) or (N, C, L)"


@register(name="nn.BatchNorm2d")
class BatchNorm2d(_BatchNorm):
    __doc__ = (
        """Batch normalisation over ``x (N, C, H, W)`` -> same shape, as ``torch.nn.BatchNorm2d``."""
        + _BN_DOC
    )


@register(name="nn.LayerNorm")
class LayerNorm(Module):
    """Normalises over the last ``len(normalized_shape)`` dims, as ``torch.nn.LayerNorm``.

    Args (torch's): ``normalized_shape`` (int or tuple), ``eps=1e-5``,
    ``elementwise_affine=True``, ``bias=True``.

    Params: ``weight normalized_shape`` = 1 and ``bias normalized_shape`` = 0 (when
    ``elementwise_affine``; ``bias`` also needs ``bias=True``).
    Shapes: ``x (..., *normalized_shape)`` -> same shape. Uses the biased variance, as torch.

    Raises:
      ValueError: the trailing dims of ``x`` are not ``normalized_shape``.
    """

    normalized_shape: int | tuple[int, ...]
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    def __post_init__(self) -> None:
        freeze(self, "normalized_shape")

    @property
    def _shape(self) -> tuple[int, ...]:
        s = self.normalized_shape
        return (s,) if isinstance(s, int) else tuple(s)

    def init(self, key: jax.Array) -> tuple[Params, State]:
        params: Params = {}
        if self.elementwise_affine:
            params["weight"] = jnp.ones(self._shape, jnp.float32)
            if self.bias:
                params["bias"] = jnp.zeros(self._shape, jnp.float32)
        return params, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        shape = self._shape
        k = len(shape)
        check(
            tuple(x.shape[x.ndim - k :]) == shape,
            self,
            f"expected input (..., {', '.join(map(str, shape))}), got shape {x.shape}.",
        )
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        xc = x - mean
        var = jnp.mean(jnp.square(xc), axis=axes, keepdims=True)
        y = xc * jax.lax.rsqrt(var + self.eps)
        lead = (1,) * (x.ndim - k)
        if self.elementwise_affine:
            y = y * params["weight"].reshape(lead + shape)
            if self.bias:
                y = y + params["bias"].reshape(lead + shape)
        return y, state


@register(name="nn.GroupNorm")
class GroupNorm(Module):
    """Normalises each of ``num_groups`` channel groups per sample, as ``torch.nn.GroupNorm``.

    Args (torch's): ``num_groups``, ``num_channels``, ``eps=1e-5``, ``affine=True``.
    Params (when ``affine``): ``weight (C,)`` = 1, ``bias (C,)`` = 0.
    Shapes: ``x (N, C, *)`` -> same shape.

    Raises:
      ValueError: ``num_channels`` not divisible by ``num_groups``, or a wrong channel count.
    """

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True

    def __post_init__(self) -> None:
        check(
            self.num_groups >= 1 and self.num_channels % self.num_groups == 0,
            self,
            f"num_channels ({self.num_channels}) must be divisible by num_groups ({self.num_groups}).",
        )

    def init(self, key: jax.Array) -> tuple[Params, State]:
        if not self.affine:
            return {}, {}
        c = self.num_channels
        return {"weight": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        check(
            x.ndim >= 2 and x.shape[1] == self.num_channels,
            self,
            f"expected input (N, C, *) with C = num_channels = {self.num_channels}, got shape {x.shape}.",
        )
        g = x.reshape(x.shape[0], self.num_groups, -1)
        mean = jnp.mean(g, axis=2, keepdims=True)
        gc = g - mean
        var = jnp.mean(jnp.square(gc), axis=2, keepdims=True)
        y = (gc * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            cshape = _channel_shape(x.ndim, self.num_channels)
            y = y * params["weight"].reshape(cshape) + params["bias"].reshape(cshape)
        return y, state
