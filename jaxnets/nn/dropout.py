"""Dropout with PyTorch's meaning: ``p`` is the probability of ZEROING an element (Dropout) or a
whole channel (Dropout1d/2d/3d)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.errors import JaxnetsWarning
from jaxnets.nn._utils import check, is_training
from jaxnets.nn.module import Key, Module, Output, Params, State, need_key

__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]


def dropout(layer: Module, p: float, x: jax.Array, train: Any, key: Key, mask_shape: Any = None) -> jax.Array:
    """``x`` with entries zeroed with probability ``p`` and the rest scaled by ``1/(1-p)``.

    The mask has ``mask_shape`` (default ``x.shape``) and broadcasts over ``x``: ``(N, C, 1, 1)``
    drops whole channels. Identity unless ``train``; training needs ``key``.
    """
    if not is_training(layer, train) or p == 0.0:
        return x
    key = need_key(layer, key)
    if p == 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - p, jnp.shape(x) if mask_shape is None else mask_shape)
    return jnp.where(keep, x * (1.0 / (1.0 - p)), jnp.zeros((), x.dtype))


@register(name="nn.Dropout")
class Dropout(Module):
    """Zeroes each element with probability ``p`` and scales the rest by ``1/(1-p)``, as
    ``torch.nn.Dropout(p=0.5)`` (``inplace`` is accepted and has no effect: arrays are immutable).

    No params. Shapes: any ``x`` -> same shape and dtype. ``train=False`` is the identity;
    ``train=True`` needs ``key=`` (a fresh one each step). ``p=1`` gives zeros, as torch.

    Raises:
      ValueError: ``p`` outside ``[0, 1]``, ``train=True`` without a ``key``, or a traced
        ``train`` (mark it static in ``jax.jit``).
    """

    p: float = 0.5
    inplace: bool = False

    def __post_init__(self) -> None:
        check(
            0.0 <= self.p <= 1.0,
            self,
            f"dropout probability has to be between 0 and 1, but got {self.p}.",
        )

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return dropout(self, self.p, x, train, key), state


class _ChannelDropout(Dropout):
    _spatial: ClassVar[int] = 2

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        n = self._spatial
        layout = "(N, C, " + ", ".join("DHW"[3 - n :] if n > 1 else "L") + ")"
        if n == 2 and x.ndim == 3:  # torch's own (deprecated) reading of 3-d input, kept for parity
            warnings.warn(
                "Dropout2d got a 3-d input and, as PyTorch does, treats it as (N, C, L) and drops "
                "channels of dim 1; use Dropout1d for that, or add the batch dim to a (C, H, W) input.",
                JaxnetsWarning,
                stacklevel=2,
            )
        check(
            x.ndim in (n + 1, n + 2),
            self,
            f"expected input {layout} or unbatched {layout.replace('N, ', '')}, got shape {x.shape}.",
        )
        batched = x.ndim == n + 2 or n == 2  # torch's 3-d input to Dropout2d is batched
        lead = x.shape[:2] if batched else x.shape[:1]
        mask = lead + (1,) * (x.ndim - len(lead))
        return dropout(self, self.p, x, train, key, mask), state


_CHANNEL_DOC = """Zeroes whole channels with probability ``p`` and scales the rest by ``1/(1-p)``, as
    ``torch.nn.{name}(p=0.5)``: each ``(n, c)`` is kept or dropped as a unit.

    No params. Shapes: {shapes} -> same. ``train=False`` is the identity; ``train=True`` needs
    ``key=``.{extra}

    Raises:
      ValueError: ``p`` outside ``[0, 1]``, a wrong input rank, ``train=True`` without a ``key``,
        or a traced ``train``.
    """


@register(name="nn.Dropout1d")
class Dropout1d(_ChannelDropout):
    __doc__ = _CHANNEL_DOC.format(name="Dropout1d", shapes="``(N, C, L)`` or ``(C, L)``", extra="")
    _spatial: ClassVar[int] = 1


@register(name="nn.Dropout2d")
class Dropout2d(_ChannelDropout):
    __doc__ = _CHANNEL_DOC.format(
        name="Dropout2d",
        shapes="``(N, C, H, W)``",
        extra=" A 3-d input is read as ``(N, C, L)``, as PyTorch does (with a warning).",
    )
    _spatial: ClassVar[int] = 2


@register(name="nn.Dropout3d")
class Dropout3d(_ChannelDropout):
    __doc__ = _CHANNEL_DOC.format(
        name="Dropout3d", shapes="``(N, C, D, H, W)`` or ``(C, D, H, W)``", extra=""
    )
    _spatial: ClassVar[int] = 3
