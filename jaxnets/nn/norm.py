"""BatchNorm1d/2d/3d and InstanceNorm1d/2d/3d: torch.nn's arguments, parameters and buffers.

Both keep PyTorch's buffers in ``state`` (``running_mean``, ``running_var``,
``num_batches_tracked``) and update them in training exactly as torch does: the unbiased variance
goes into ``running_var``; BatchNorm's ``momentum=None`` is a cumulative average, InstanceNorm's
means no update (torch passes 0). LayerNorm, GroupNorm, RMSNorm and LocalResponseNorm, which have
no buffers, are in :mod:`.norm_layer`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.errors import JaxnetsWarning
from jaxnets.nn._utils import check, check_channels, is_training
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
]  # fmt: skip

_LAYOUTS = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


class _NormBase(Module):
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        c = self.num_features
        params: Params = {}
        if self.affine:
            params["weight"] = jnp.ones((c,), jnp.float32)
            if self.bias:
                params["bias"] = jnp.zeros((c,), jnp.float32)
        state: State = {}
        if self.track_running_stats:
            state = {
                "running_mean": jnp.zeros((c,), jnp.float32),
                "running_var": jnp.ones((c,), jnp.float32),
                "num_batches_tracked": jnp.zeros((), jnp.int32),
            }
        return params, state

    def _normalize(
        self, params: Params, x: jax.Array, mean: jax.Array, var: jax.Array
    ) -> jax.Array:
        """``(x - mean) / sqrt(var + eps) * w + b``, folded into one scale and shift per channel
        (axis 1); ``mean``/``var`` are ``(C,)`` (BatchNorm) or ``(N, C)`` (InstanceNorm)."""
        c, rest = x.shape[1], (1,) * (x.ndim - 2)  # num_features, or not in torch's warning case
        stats = (mean.shape[0] if mean.ndim == 2 else 1, c) + rest
        scale = jax.lax.rsqrt(var.reshape(stats) + self.eps)
        if self.affine:
            scale = scale * params["weight"].reshape((1, c) + rest)
        shift = -mean.reshape(stats) * scale
        if self.affine and self.bias:
            shift = shift + params["bias"].reshape((1, c) + rest)
        return x * scale + shift

    def _updated(
        self, state: State, mean: jax.Array, unbiased: jax.Array, factor: jax.Array | float, count: jax.Array
    ) -> State:
        f = jnp.asarray(factor, mean.dtype)
        return {
            "running_mean": (1 - f) * state["running_mean"] + f * jax.lax.stop_gradient(mean),
            "running_var": (1 - f) * state["running_var"] + f * jax.lax.stop_gradient(unbiased),
            "num_batches_tracked": count,
        }


class _BatchNorm(_NormBase):
    _ranks: ClassVar[tuple[int, ...]] = (4,)

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        layouts = " or ".join(_LAYOUTS[r] for r in self._ranks)
        check(x.ndim in self._ranks, self, f"expected input {layouts}, got shape {x.shape}.")
        check_channels(self, x, self.num_features, "num_features", _LAYOUTS[x.ndim])
        axes = (0,) + tuple(range(2, x.ndim))
        training = is_training(self, train)
        new_state = state
        if training or not self.track_running_stats:
            n = x.size // self.num_features
            check(
                n > 1,
                self,
                f"expected more than 1 value per channel when training, got input shape {x.shape}.",
            )
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))), axis=axes)
            if training and self.track_running_stats:
                count = state["num_batches_tracked"] + 1
                # momentum=None: a cumulative moving average, as torch
                f = 1.0 / count.astype(mean.dtype) if self.momentum is None else self.momentum
                new_state = self._updated(state, mean, var * (n / (n - 1)), f, count)
        else:
            mean, var = state["running_mean"], state["running_var"]
        return self._normalize(params, x, mean, var), new_state


_BN_DOC = """Batch normalisation over ``x {shapes}`` -> same shape, as ``torch.nn.{name}``.

    Args (torch's): ``num_features`` C; ``eps=1e-5``; ``momentum=0.1`` (``None``: cumulative
    average, factor ``1/num_batches_tracked``); ``affine=True``; ``track_running_stats=True``;
    keyword ``bias=True`` (torch 2.13's: ``False`` drops the bias of an affine layer).

    Params (when ``affine``): ``weight (C,)`` = 1, ``bias (C,)`` = 0. State (when
    ``track_running_stats``): ``running_mean (C,)`` = 0, ``running_var (C,)`` = 1,
    ``num_batches_tracked ()`` int32 (torch: int64; loading casts).

    ``train=True`` normalises with the batch mean and biased variance and returns updated running
    stats (``running = (1 - m) * running + m * batch``, unbiased variance); ``train=False`` uses
    the running stats (batch stats when ``track_running_stats=False``). Stats are not
    differentiated through into ``state``.

    Raises:
      ValueError: the input has the wrong rank or channel count (the message gives the transpose
        for channels-last input), one value per channel in training, or a traced ``train``.
    """


@register(name="nn.BatchNorm1d")
class BatchNorm1d(_BatchNorm):
    __doc__ = _BN_DOC.format(shapes="(N, C)`` or ``(N, C, L)", name="BatchNorm1d")
    _ranks: ClassVar[tuple[int, ...]] = (2, 3)


@register(name="nn.BatchNorm2d")
class BatchNorm2d(_BatchNorm):
    __doc__ = _BN_DOC.format(shapes="(N, C, H, W)", name="BatchNorm2d")


@register(name="nn.BatchNorm3d")
class BatchNorm3d(_BatchNorm):
    __doc__ = _BN_DOC.format(shapes="(N, C, D, H, W)", name="BatchNorm3d")
    _ranks: ClassVar[tuple[int, ...]] = (5,)


class _InstanceNorm(_NormBase):
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = False
    track_running_stats: bool = False
    bias: bool = True

    _n: ClassVar[int] = 2

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        n = self._n
        layout = _LAYOUTS[n + 2]
        check(
            x.ndim in (n + 1, n + 2),
            self,
            f"expected input {layout} or {layout.replace('N, ', '')}, got shape {x.shape}.",
        )
        unbatched = x.ndim == n + 1
        if unbatched:
            x = x[None]
        if x.shape[1] != self.num_features:
            if self.affine or self.track_running_stats:
                check_channels(self, x, self.num_features, "num_features", layout)
            warnings.warn(  # torch only warns here: per-instance statistics need no channel count
                f"{type(self).__name__}: input's size at dim 1 ({x.shape[1]}) does not match "
                f"num_features ({self.num_features}); as PyTorch, normalising anyway.",
                JaxnetsWarning,
                stacklevel=2,
            )
        training = is_training(self, train)
        new_state = state
        axes = tuple(range(2, x.ndim))
        if training or not self.track_running_stats:
            count = x[0, 0].size
            check(
                count > 1,
                self,
                f"expected more than 1 spatial element when training, got input shape {x.shape}.",
            )
            mean = jnp.mean(x, axis=axes)  # (N, C)
            var = jnp.mean(jnp.square(x - mean.reshape(mean.shape + (1,) * n)), axis=axes)
            if training and self.track_running_stats:
                # torch's instance_norm: batch_norm on (1, N*C, ...) with the running stats repeated
                # N times, then the N copies averaged; momentum None means 0, the counter stays.
                m = 0.0 if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1))
                new_state = self._updated(
                    state, mean.mean(0), unbiased.mean(0), m, state["num_batches_tracked"]
                )
        else:
            mean, var = state["running_mean"], state["running_var"]
        y = self._normalize(params, x, mean, var)
        return (y[0] if unbatched else y), new_state


_IN_DOC = """Instance normalisation (per sample and channel, over the spatial dims), as
    ``torch.nn.{name}``. Shapes: ``x {shape}`` or unbatched ``{unbatched}`` -> same.

    Args (torch's, with its defaults): ``num_features`` C, ``eps=1e-5``, ``momentum=0.1``,
    ``affine=False``, ``track_running_stats=False``, keyword ``bias=True``.

    Params (when ``affine``): ``weight (C,)`` = 1, ``bias (C,)`` = 0. State (when
    ``track_running_stats``): ``running_mean``, ``running_var``, ``num_batches_tracked`` as
    BatchNorm's; training updates the running stats with the instance means and unbiased
    variances averaged over the batch, as torch (``momentum=None``: no update; the counter is
    never incremented, as torch). ``train=False`` with running stats uses them.

    Raises:
      ValueError: a wrong input rank; a channel count other than ``num_features`` when
        ``affine`` or ``track_running_stats`` (otherwise it warns, as torch); one spatial
        element in training; a traced ``train``.
    """


@register(name="nn.InstanceNorm1d")
class InstanceNorm1d(_InstanceNorm):
    __doc__ = _IN_DOC.format(name="InstanceNorm1d", shape="(N, C, L)", unbatched="(C, L)")
    _n: ClassVar[int] = 1


@register(name="nn.InstanceNorm2d")
class InstanceNorm2d(_InstanceNorm):
    __doc__ = _IN_DOC.format(name="InstanceNorm2d", shape="(N, C, H, W)", unbatched="(C, H, W)")
    _n: ClassVar[int] = 2


@register(name="nn.InstanceNorm3d")
class InstanceNorm3d(_InstanceNorm):
    __doc__ = _IN_DOC.format(
        name="InstanceNorm3d", shape="(N, C, D, H, W)", unbatched="(C, D, H, W)"
    )
    _n: ClassVar[int] = 3
